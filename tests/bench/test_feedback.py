"""bench.feedback on a synthetic protocol (no embedder): the confusion it picks and what one negative changes."""

from pathlib import Path

import numpy as np

from bench.feedback import feedback_report
from bench.openset import Protocol
from trainer.embedding_cache import Embedded

DIM = 16


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_one_negative_fixes_a_repeated_confusion_and_changes_nothing_else(redis_client):
    rng = np.random.default_rng(0)
    names = ["P", "Q", "R", "S"]
    centres = unit(np.eye(4, DIM))
    q_like = unit(centres[[1]] + 0.3 * centres[[0]])  # P's photos taken like Q: closer to Q's enrolled photo
    probe_rows = [q_like + 0.02 * rng.standard_normal((3, DIM)), centres[[0, 0]],  # P: 3 named Q, 2 right
                  centres[[1, 1]], centres[[2, 2]], centres[[3]]]
    probes = unit(np.concatenate(probe_rows))
    truth = np.array([0] * 5 + [1, 1, 2, 2, 3])
    strangers = unit(rng.standard_normal((20, DIM)))
    protocol = Protocol(names, 1, [Path(f"{n}/{n}_0001.jpg") for n in names],
                        [Path(f"{names[t]}/{names[t]}_{i:04d}.jpg") for i, t in enumerate(truth)], truth,
                        [Path(f"X{i}/X{i}_0001.jpg") for i in range(20)], [])
    parts = {"enrolled": Embedded(centres, np.array(["detected"] * 4)),
             "probes": Embedded(probes, np.array(["detected"] * 10)),
             "strangers": Embedded(strangers, np.array(["detected"] * 20))}
    report = feedback_report(protocol, parts, "model-1", 0.8, "max", redis_client)
    assert report["confusions"] == [["P", "Q", 3]]
    assert (report["person"], report["named_as"]) == ("P", "Q")
    assert (report["person_named_q_before"], report["person_named_q_after"]) == (2, 0)
    assert report["other_decisions_changed"] == 0 and report["other_decisions"] == 10 + 20 - 5
    assert report["refused_after"] == 3  # the negative photo itself and the other two
