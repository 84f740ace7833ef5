"""Negative feedback on the open-set benchmark: one "this is not Q" fixes a confusion and changes nothing else.

    python -m bench.feedback --json          # one JSON object on stdout
    python -m bench.feedback                 # a readable summary

The protocol, photos and embeddings are `bench.openset`'s (held-out LFW people, one photo enrolled, their other
photos as probes, one-photo strangers; the same embedding cache, so a run after `bench.openset` embeds
nothing), decided at the shipped operating point by the real store, snapshot and matcher (a private embedded
Redis). Among the probes of person P wrongly named Q, it takes the pair (P, Q) with the most such photos (P
needing 2+ other photos), adds ONE of those photos as a negative template of Q, and decides every face again:

- `person_named_q_before/after`: P's OTHER photos named Q (the confusion the feedback should fix);
- `other_decisions_changed`: every other decision of the benchmark (all other probes and every stranger) that
  changed, which the matcher's rule keeps at 0 unless another face is more like the negative than like Q.

At the shipped point few probes are misnamed, and rarely twice as the same Q; `--set run.open_set_far=0.1`
(a looser point) shows the fix on a pair confused several times.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from bench.openset import build_protocol, facestream_embeddings


def decisions(store, threshold: float, score: str, faces: np.ndarray) -> list:
    """The matcher's Match for every face, on a fresh snapshot of the gallery (negatives included)."""
    from pipeline.gallery.matcher import Matcher
    from pipeline.gallery.search import ExactSearch

    return Matcher(ExactSearch(store.snapshot()), threshold, score=score).match(faces)


def confusions(protocol, probe_matches: list) -> Counter:
    """(P, Q) -> how many probes of P are named Q (Q != P), at the matcher's threshold."""
    names, truth = protocol.names, protocol.probe_identity
    return Counter((names[truth[i]], m.identity) for i, m in enumerate(probe_matches)
                   if m.identity is not None and m.identity != names[truth[i]])


def confusion(protocol, wrong: Counter, probe_matches: list) -> tuple[str, str, list[int]] | None:
    """(P, Q, P's probe rows named Q) for the pair with the most such probes, P having 3+ probes; None if none."""
    for (person, named), _ in wrong.most_common():
        rows = np.flatnonzero(protocol.probe_identity == protocol.names.index(person))
        if len(rows) >= 3:  # the negative photo plus 2+ others
            return person, named, [int(i) for i in rows if probe_matches[i].identity == named]
    return None


def feedback_report(protocol, parts: dict, fingerprint: str, threshold: float, score: str, client) -> dict:
    """Enrol, decide, add one negative, decide again (see the module docstring); `parts` as openset's."""
    from pipeline.gallery import GalleryStore

    gallery, probes, strangers = (parts[k].embeddings for k in ("enrolled", "probes", "strangers"))
    store = GalleryStore(client, "feedback")
    k = protocol.templates
    store.add_many(((name, gallery[i * k:(i + 1) * k], [p.name for p in protocol.enrolled[i * k:(i + 1) * k]])
                    for i, name in enumerate(protocol.names)), fingerprint)
    faces = np.concatenate([probes, strangers])
    before = decisions(store, threshold, score, faces)
    wrong = confusions(protocol, before[:len(probes)])
    found = confusion(protocol, wrong, before[:len(probes)])
    report = {"gallery_size": len(protocol.names), "probes": len(probes), "strangers": len(strangers),
              "threshold": threshold, "score": score,
              "probes_wrongly_named": sum(wrong.values()),
              "confusions": [[p, q, n] for (p, q), n in wrong.most_common(10)],
              "strangers_named": sum(m.identity is not None for m in before[len(probes):])}
    if found is None:
        return {**report, "person": None, "note": "no probe of a person with 3+ photos is wrongly named"}
    person, named, wrong_rows = found
    negative = wrong_rows[0]
    store.add_negatives(named, probes[negative][None], [f"not-{protocol.probes[negative].name}"])
    after = decisions(store, threshold, score, faces)
    person_rows = set(np.flatnonzero(protocol.probe_identity == protocol.names.index(person)).tolist()) - {negative}
    changed = [i for i, (b, a) in enumerate(zip(before, after)) if b.identity != a.identity and i != negative]
    others = [i for i in changed if i not in person_rows]
    return {**report, "person": person, "named_as": named, "negative_photo": protocol.probes[negative].name,
            "person_other_photos": len(person_rows),
            "person_named_q_before": sum(before[i].identity == named for i in person_rows),
            "person_named_q_after": sum(after[i].identity == named for i in person_rows),
            "person_correct_before": sum(before[i].identity == person for i in person_rows),
            "person_correct_after": sum(after[i].identity == person for i in person_rows),
            "person_unknown_before": sum(before[i].identity is None for i in person_rows),
            "person_unknown_after": sum(after[i].identity is None for i in person_rows),
            "other_decisions": len(faces) - len(person_rows) - 1, "other_decisions_changed": len(others),
            "other_changes": [{"face": _face_name(protocol, i), "before": before[i].identity,
                               "after": after[i].identity} for i in others[:20]],
            "refused_after": sum(m.refused == named for m in after)}


def _face_name(protocol, i: int) -> str:
    paths = [*protocol.probes, *protocol.strangers]
    return f"{paths[i].parent.name}/{paths[i].name}"


def run(args) -> dict:
    from bench.gallery import redis_client
    from pipeline.app.config import load_app_config
    from pipeline.app.services import gallery_operating_point
    from pipeline.core.model_card import load_card

    cfg = load_app_config(args.config, args.set)
    folds = list(load_card(args.model).training["data"]["holdout_folds"])
    protocol = build_protocol(args.images, args.pairs, folds, args.templates)
    parts, embedder = facestream_embeddings(protocol, args.images, args.model)
    point = gallery_operating_point(cfg, embedder.card, [protocol.templates] * len(protocol.names))
    with tempfile.TemporaryDirectory(prefix="bench-feedback-") as workdir:
        args.redis_url = None  # a private server: the benchmark writes a gallery of its own
        client, stop = redis_client(args, Path(workdir))
        try:
            report = feedback_report(protocol, parts, embedder.fingerprint, point.threshold, cfg.run.score, client)
            return {**report, "open_set_far": cfg.run.open_set_far, "model": embedder.card.model_id}
        finally:
            client.close()
            stop()


def print_summary(result: dict) -> None:
    print(f"gallery {result['gallery_size']} people, {result['probes']} probes, {result['strangers']} strangers, "
          f"threshold {result['threshold']:.4f}; {result['probes_wrongly_named']} probes wrongly named")
    if result["person"] is None:
        print(result["note"])
        return
    print(f"{result['person']} named {result['named_as']}: negative '{result['negative_photo']}' added to "
          f"{result['named_as']}")
    print(f"  {result['person']}'s other {result['person_other_photos']} photos named {result['named_as']}: "
          f"{result['person_named_q_before']} -> {result['person_named_q_after']}; named correctly: "
          f"{result['person_correct_before']} -> {result['person_correct_after']}; unknown: "
          f"{result['person_unknown_before']} -> {result['person_unknown_after']}")
    print(f"  other decisions changed: {result['other_decisions_changed']} of {result['other_decisions']}")


def main(argv: list[str] | None = None) -> int:
    from bench.openset import protocol_parser

    args = protocol_parser(__doc__).parse_args(argv)

    from bench.cli import finish
    from pipeline.core.logs import configure_logging

    configure_logging("WARNING")
    return finish(lambda: run(args), args.json, print_summary)


if __name__ == "__main__":
    sys.exit(main())
