"""bench.video_templates' sampling of a clip's accepted frames, on synthetic templates (no model, no video)."""

from __future__ import annotations

import numpy as np

from bench.video_templates import choose, mean_pairwise


def test_choose_samples_candidates_as_enroll_does_then_keeps_k():
    frames = np.arange(20, 60)  # accepted frames 20..59
    radians = np.radians(np.linspace(0, 90, len(frames)))
    templates = np.stack([np.cos(radians), np.sin(radians)], axis=1)
    quality = np.linspace(0, 1, len(frames))
    # One in 10, 5 sampled at most: frames 0, 10, ..., 40 are sampled; 20, 30, 40 were accepted.
    assert frames[choose(frames, templates, quality, 10, 5, 0)].tolist() == [20, 30, 40]
    # The best (40, highest quality) first, then the farthest from it (20).
    assert frames[choose(frames, templates, quality, 10, 5, 2)].tolist() == [40, 20]
    assert mean_pairwise(templates[:1]) is None
    assert abs(mean_pairwise(templates[[0, -1]]) - 0.0) < 1e-9
