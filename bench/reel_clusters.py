"""Unknown people on video: do run.py's stable unknown ids put each stranger's tracks in one cluster, and only theirs?

    python -m bench.reel_clusters --json                     # one JSON object on stdout
    python -m bench.reel_clusters --people 20 --seconds 60   # a longer reel (bench.reel's default)
    python -m bench.reel_clusters --redis-url redis://host:6379/0 --keep out/reel-clusters

The reel of `bench.reel` (same cast, shots and cache under state/reel/), but with NOBODY enrolled: every person
is a stranger, so every confirmed track is an unknown one. `run.py --tracks --events` runs on it twice against
one Redis, in a gallery `bench-reel-clusters-<seed>` emptied first (on a scratch embedded Redis unless
--redis-url): the first run starts from no clusters; the second is the restart case, the first run's clusters
already in Redis. This is the live path (UnknownRecorder -> UnknownDirectory); `bench.clusters` measures the
same clustering on photos fed one by one.

Per run, each track confirmed unknown (its last identity_confirmed event names nobody) is one item:
- its label: the unknown_id it ended with (its track_ended event's, else its last confirmation's), followed
  through the run's `unknown_merged` events to the surviving cluster; a track with neither is
  `tracks_without_id`, left out;
- its person: the one whose truth box it covers most. Per frame, the --tracks boxes are matched one-to-one to
  the truth boxes (`bench.reel.score.match_boxes`, IoU >= 0.5); the person with the most matched frames wins
  (then the larger IoU sum). A track never matched is `tracks_unattributed`, left out.
Then `bench.clusters.cluster_metrics` over those tracks: pairwise and BCubed precision/recall,
`false_merge_rate` (share of clusters holding tracks of 2+ people), and the false merges and split people
themselves, with the cosine similarity of the mean stored faces (read from Redis after the first run) of the
merged people, or of a split person's clusters (faces of tracks that stayed on one person only).
`mixed_tracks`: scored tracks that covered 2+ people for MIN_SEGMENT_FRAMES+ frames each, a tracker error
(a cut in place not split) that the per-track view hides: `by_segment` scores each (track, person) stretch
as one item carrying the track's id, so such a track is the false merge its id makes of two people.
`pure_tracks`: the scores over the tracks that stayed on one person (the clustering without the tracker's
errors). `people_in_reel`: everyone the reel shows, tracked or not.

`stable_ids`: the share of the second run's tracks labelled with the first run's majority id of their person
(both runs' merges applied); `stable_ids_any`: with any of their person's first-run ids (a person split in the
first run costs `stable_ids` a track even when the restart changed nothing). 1.0: a restart changes no id.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.clusters import cluster_metrics
from bench.reel.scenes import iou
from bench.reel.score import match_boxes, read_events, read_tracks

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "lfw"
STATE = REPO / "state"
GALLERY = "bench-reel-clusters"  # + "-<seed>"
MIN_SEGMENT_FRAMES = 10  # 0.4 s: a track's stretch on one person, longer than a box coasting past a cut
METRICS = ("pair_precision", "pair_recall", "bcubed_precision", "bcubed_recall", "bcubed_f", "false_merge_rate")
Labelled = list[tuple[int, str, str]]  # (track, person, unknown id) of each scored track


@dataclass(frozen=True)
class UnknownTracks:
    """What a run's events say about its tracks confirmed unknown."""

    ids: dict[int, str]  # track -> the unknown id it ended with, as emitted
    without_id: list[int]  # tracks confirmed unknown that never got one
    aliases: dict[str, str]  # merged cluster id -> the id that absorbed it (unknown_merged events)
    anon_ids: dict[str, int]  # the tracks' anonymous ids ("reel-t9", as sightings name them) -> track
    merged_events: int


def unknown_tracks(events: Sequence[dict]) -> UnknownTracks:
    """The unknown-confirmed tracks of one run's events (one camera), their ids and the run's merges."""
    verdict: dict[int, bool] = {}  # track -> its last confirmation named nobody
    ids: dict[int, str] = {}
    aliases: dict[str, str] = {}
    anon: dict[str, int] = {}
    merged = 0
    for event in events:
        kind = event.get("type")
        if kind == "unknown_merged":
            merged += 1
            for old in event.get("extra", {}).get("merged", []):
                aliases[old] = event["unknown_id"]
            continue
        if kind not in ("identity_confirmed", "track_ended"):
            continue
        track = int(event["track"])
        anon[event["anon_id"]] = track
        if kind == "identity_confirmed":
            verdict[track] = event.get("identity") is None
        if event.get("unknown_id"):  # track_ended comes last: it carries the id the track ended with
            ids[track] = event["unknown_id"]
    unknown = {t for t, is_unknown in verdict.items() if is_unknown}
    return UnknownTracks({t: ids[t] for t in sorted(unknown) if t in ids},
                         sorted(t for t in unknown if t not in ids), aliases, anon, merged)


def resolve(unknown_id: str, aliases: dict[str, str]) -> str:
    """The cluster `unknown_id` ended up in, following merges (a cycle stops where it closes)."""
    seen = {unknown_id}
    while unknown_id in aliases and aliases[unknown_id] not in seen:
        unknown_id = aliases[unknown_id]
        seen.add(unknown_id)
    return unknown_id


@dataclass(frozen=True)
class Attribution:
    person: str  # the person the track covers most
    share: float  # of the track's matched frames, those on that person (< 1: the track covered 2+ people)


def matched_frames(truth_boxes: Sequence[list[dict]], faces: Sequence[list[dict]]) -> tuple[dict, dict]:
    """Per track, per person: frames its box was matched one-to-one to theirs, and the IoU sum over them."""
    frames: dict[int, Counter] = defaultdict(Counter)
    overlap: dict[int, Counter] = defaultdict(Counter)
    for index, truth in enumerate(truth_boxes):
        shown = [f for f in (faces[index] if index < len(faces) else []) if f.get("track") is not None]
        for t, p in match_boxes([b["box"] for b in truth], [f["box"] for f in shown]):
            track, person = int(shown[p]["track"]), truth[t]["name"]
            frames[track][person] += 1
            overlap[track][person] += iou(truth[t]["box"], shown[p]["box"])
    return frames, overlap


def attribute_tracks(truth_boxes: Sequence[list[dict]], faces: Sequence[list[dict]]) -> dict[int, Attribution]:
    """Each matched track's person: most frames matched one-to-one to their truth box, then the larger IoU sum."""
    frames, overlap = matched_frames(truth_boxes, faces)
    out = {}
    for track, counts in frames.items():
        person = _majority(counts, overlap[track])
        out[track] = Attribution(person, counts[person] / sum(counts.values()))
    return out


def segment_people(truth_boxes: Sequence[list[dict]], faces: Sequence[list[dict]],
                   min_frames: int = MIN_SEGMENT_FRAMES) -> dict[int, list[str]]:
    """Each matched track's people: its own (`attribute_tracks`) and whoever else it covered `min_frames`+
    frames (fewer: a box coasting over a cut)."""
    frames, overlap = matched_frames(truth_boxes, faces)
    return {track: sorted({_majority(counts, overlap[track])} | {p for p, n in counts.items() if n >= min_frames})
            for track, counts in frames.items()}


def _majority(frames: Counter, overlap: Counter) -> str:
    return max(frames, key=lambda name: (frames[name], overlap[name], name))


def labelled_tracks(people: dict[int, Attribution], unknown: UnknownTracks, aliases: dict[str, str]) -> Labelled:
    """(track, person, resolved unknown id) of every unknown track with an id and a person."""
    return [(t, people[t].person, resolve(u, aliases)) for t, u in unknown.ids.items() if t in people]


def cluster_scores(labelled: Labelled) -> dict:
    """`cluster_metrics` over the tracks; each cluster holding 2+ people and each person in 2+ clusters (tracks)."""
    if not labelled:
        return {**{k: None for k in METRICS}, "clusters": 0, "people": 0, "people_split": 0, "false_merges": [],
                "splits": []}
    metrics = cluster_metrics([person for _, person, _ in labelled], [label for *_, label in labelled])
    by_cluster: dict[str, Counter] = defaultdict(Counter)
    by_person: dict[str, Counter] = defaultdict(Counter)
    for _, person, label in labelled:
        by_cluster[label][person] += 1
        by_person[person][label] += 1
    merges = [{"unknown_id": label, "people": dict(sorted(c.items()))}
              for label, c in sorted(by_cluster.items()) if len(c) > 1]
    splits = [{"person": person, "clusters": dict(sorted(c.items()))}
              for person, c in sorted(by_person.items()) if len(c) > 1]
    return {**{k: round(metrics[k], 4) for k in METRICS}, "clusters": metrics["clusters"],
            "people": metrics["people"], "people_split": len(splits), "false_merges": merges, "splits": splits}


def score_run(truth: dict, faces: Sequence[list[dict]], events: Sequence[dict], aliases: dict[str, str] | None = None,
              min_segment_frames: int = MIN_SEGMENT_FRAMES) -> tuple[dict, Labelled]:
    """One run's figures and its labelled tracks; `aliases` (default: the run's own merges) resolve the ids.

    `mixed_tracks`: scored tracks that covered 2+ people (`segment_people`: a tracker error the clustering
    inherits, as such a track's faces are both people's); `track_purity`: the tracks' mean share of matched
    frames on their person. `pure_tracks`: the scores over the other tracks only. `by_segment`:
    the same scores with each (track, person) of `segment_people` one item carrying the track's id, so a track
    carried across a cut counts as the false merge its id makes of two people."""
    unknown = unknown_tracks(events)
    people = attribute_tracks(truth["boxes"], faces)
    aliases = unknown.aliases if aliases is None else aliases
    labelled = labelled_tracks(people, unknown, aliases)
    shares = [people[t].share for t, _, _ in labelled]
    stretches = segment_people(truth["boxes"], faces, min_segment_frames)
    segments = [(t, person, resolve(u, aliases)) for t, u in unknown.ids.items() for person in stretches.get(t, [])]
    pure = [item for item in labelled if len(stretches[item[0]]) == 1]
    result = {"tracks": len(unknown.ids), "tracks_without_id": len(unknown.without_id),
              "tracks_unattributed": len(unknown.ids) - len(labelled), **cluster_scores(labelled),
              "mixed_tracks": sum(len(stretches.get(t, [])) > 1 for t, _, _ in labelled),
              "track_purity": round(float(np.mean(shares)), 4) if shares else None,
              "unknown_merged_events": unknown.merged_events,
              "pure_tracks": {"tracks": len(pure), **cluster_scores(pure)},
              "by_segment": {"segments": len(segments), **cluster_scores(segments)}}
    return result, labelled


def stable_ids(first: Labelled, second: Labelled) -> dict:
    """Share of `second`'s tracks whose id is their person's majority id in `first` (ties: the smaller id);
    `stable_ids_any`: whose id is any of their person's ids in `first` (a person split in the first run costs
    `stable_ids` a track even when the restart changed nothing)."""
    votes: dict[str, Counter] = defaultdict(Counter)
    for _, person, label in first:
        votes[person][label] += 1
    majority = {person: min(c, key=lambda label: (-c[label], label)) for person, c in votes.items()}
    stable = sum(majority.get(person) == label for _, person, label in second)
    known = sum(label in votes.get(person, ()) for _, person, label in second)
    share = lambda n: round(n / len(second), 4) if second else None
    return {"stable_ids": share(stable), "stable_ids_any": share(known), "stable_tracks": stable,
            "compared_tracks": len(second),
            "new_ids": len({label for *_, label in second} - {label for *_, label in first})}


def pure_tracks(truth_boxes: Sequence[list[dict]], faces: Sequence[list[dict]]) -> dict[int, str]:
    """track -> its person, for the tracks that stayed on one person (`segment_people`)."""
    return {t: people[0] for t, people in segment_people(truth_boxes, faces).items() if len(people) == 1}


def with_similarities(result: dict, person_of: dict[int, str], unknown: UnknownTracks, store) -> dict:
    """`result` with the cosine similarity of the mean stored faces (`store.sightings(cluster)`) of the people
    in each false merge, and of a split person's faces in each of their clusters. Only the faces of this run's
    tracks in `person_of` count (`pure_tracks`: a track carried across a cut holds two people's faces)."""
    faces: dict[str, dict[str, np.ndarray]] = {}  # cluster -> person -> unit mean face

    def means(cluster_id: str) -> dict[str, np.ndarray]:
        if cluster_id not in faces:
            found: dict[str, list[np.ndarray]] = defaultdict(list)
            for sighting in store.sightings(cluster_id):
                person = person_of.get(unknown.anon_ids.get(sighting.track, -1))
                if person is not None:
                    found[person].append(sighting.embedding)
            faces[cluster_id] = {p: _unit(np.mean(v, axis=0)) for p, v in found.items()}
        return faces[cluster_id]

    def pairs(vectors: dict[str, np.ndarray], key: str) -> list[dict]:
        names = sorted(vectors)
        found = [{key: [a, b], "similarity": round(float(vectors[a] @ vectors[b]), 4)}
                 for i, a in enumerate(names) for b in names[i + 1:]]
        return sorted(found, key=lambda pair: -pair["similarity"])

    merges = [{**m, "similarities": pairs(means(m["unknown_id"]), "people")} for m in result["false_merges"]]
    splits = [{**s, "similarities": pairs({c: means(c)[s["person"]] for c in s["clusters"]
                                           if s["person"] in means(c)}, "clusters")} for s in result["splits"]]
    return {**result, "false_merges": merges, "splits": splits}


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


# -- running ----------------------------------------------------------------------------------------------
def clear_gallery(client, gallery: str) -> int:
    """Delete every key of `gallery` (identities, unknowns, events stream); how many there were."""
    from pipeline.gallery.keys import GalleryKeys

    keys = list(client.scan_iter(match=GalleryKeys(gallery).pattern, count=1000))
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start:start + 1000])
    return len(keys)


def run_once(video: Path, url: str, gallery: str, work: Path, name: str, extra: Sequence[str]) -> dict:
    """`run.py --tracks --events` on the video: the paths, its summary and its wall time."""
    from bench.reel.facestream import _call

    paths = {k: work / f"{name}-{k}.jsonl" for k in ("tracks", "events")}
    summary = work / f"{name}-summary.json"
    started = time.perf_counter()
    _call([str(REPO / "run.py"), "--source", str(video), "--gallery", gallery, "--redis-url", url,
           "--tracks", str(paths["tracks"]), "--events", str(paths["events"]), "--summary-json", str(summary),
           *extra])
    return {**paths, "run_s": round(time.perf_counter() - started, 1),
            "summary": json.loads(summary.read_text(encoding="utf-8"))}


def run_summary(ran: dict) -> dict:
    s = ran["summary"]
    return {"fps": s.get("fps"), "frames": s.get("frames"), "frames_dropped": s.get("frames_dropped"),
            "tracks_announced": s.get("tracks"), "track_splits": s.get("track_splits"),
            "unknowns": s.get("unknowns"), "run_s": ran["run_s"]}


def measure(truth: dict, video: Path, url: str, gallery: str, work: Path, extra: Sequence[str]) -> dict:
    """Both runs on one Redis and their scores."""
    from pipeline.redis.connect import connect
    from pipeline.unknowns.sightings import UnknownStore

    client = connect(url, STATE)
    cleared = clear_gallery(client, gallery)
    first = run_once(video, url, gallery, work, "first", extra)
    events1 = read_events(first["events"])
    faces1 = read_tracks(first["tracks"], truth["frames"])
    scores1, labelled1 = score_run(truth, faces1, events1)
    # read before the restart: the second run adds faces to these clusters under the same anonymous track ids
    pure, store = pure_tracks(truth["boxes"], faces1), UnknownStore(client, gallery)
    scores1 = with_similarities(scores1, pure, unknown_tracks(events1), store)
    scores1["pure_tracks"] = with_similarities(scores1["pure_tracks"], pure, unknown_tracks(events1), store)
    second = run_once(video, url, gallery, work, "second", extra)
    events2 = read_events(second["events"])
    scores2, labelled2 = score_run(truth, read_tracks(second["tracks"], truth["frames"]), events2)
    client.close()
    both = {**unknown_tracks(events1).aliases, **unknown_tracks(events2).aliases}
    across1, across2 = ([(t, person, resolve(u, both)) for t, person, u in labelled]
                        for labelled in (labelled1, labelled2))
    return {**scores1, **stable_ids(across1, across2), "second_run": scores2,
            "runs": {"first": run_summary(first), "second": run_summary(second)}, "keys_cleared": cleared}


def reel_clusters(seed: int = 0, people: int = 10, seconds: float = 30.0, redis_url: str | None = None,
                  overrides: Sequence[str] = (), keep: Path | None = None) -> dict:
    """Build (or reuse) the reel, run run.py twice with an empty gallery, score the unknown tracks' clusters.

    `people`, `seconds`, `seed`: as `python -m bench.reel` (its cast: `people` + as many strangers + half as
    many single-image strangers, none enrolled here). `overrides`: run.py `--set KEY=VALUE` items.
    """
    from bench.machine import describe_machine
    from bench.reel.build import ensure_reel
    from pipeline.redis.server import EmbeddedRedis

    started = time.perf_counter()
    folder, truth = ensure_reel(LFW, STATE / "reel", seed, people, max(people // 2, 1), seconds)
    build_s = time.perf_counter() - started
    extra = [arg for o in overrides for arg in ("--set", o)]
    gallery = f"{GALLERY}-{seed}"
    with tempfile.TemporaryDirectory(prefix="bench-reel-clusters-") as tmp:
        work = Path(tmp)
        server = EmbeddedRedis(work / "redis").start() if redis_url is None else None
        try:
            result = measure(truth, folder / "reel.mp4", redis_url or server.url, gallery, work, extra)
        finally:
            if server is not None:
                server.stop()
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for path in [folder / "truth.json", *work.glob("*.jsonl"), *work.glob("*-summary.json")]:
                shutil.copy2(path, keep / path.name)
    shown = {box["name"] for frame in truth["boxes"] for box in frame}
    return {**result, "people_in_reel": len(shown), "fps": result["runs"]["first"]["fps"], "gallery": gallery,
            "redis": "embedded (scratch)" if redis_url is None else "--redis-url",
            "overrides": list(overrides), "reel": truth["description"] | {"folder": str(folder)},
            "settings": {"seed": seed, "people": people, "seconds": seconds, "enrolled": 0},
            "timings_s": {"build_or_load": round(build_s, 1), "total": round(time.perf_counter() - started, 1)},
            "machine": describe_machine()}


# -- command line ----------------------------------------------------------------------------------------
def print_table(result: dict) -> None:
    second = result["second_run"]
    print(f"{result['tracks']} unknown tracks ({result['tracks_without_id']} without an id, "
          f"{result['tracks_unattributed']} unattributed) of {result['people']} people -> "
          f"{result['clusters']} clusters; {result['mixed_tracks']} tracks covered 2+ people")
    print(f"{'':12}" + "".join(f"{k:>18}" for k in METRICS))
    rows = (("first run", result), ("second run", second), ("pure tracks", result["pure_tracks"]),
            ("by segment", result["by_segment"]))
    for name, row in rows:
        print(f"{name:12}" + "".join(f"{_cell(row[k]):>18}" for k in METRICS))
    print(f"stable_ids {_cell(result['stable_ids'])} ({result['stable_tracks']}/{result['compared_tracks']} "
          f"tracks), unknown_merged events {result['unknown_merged_events']}, fps {result['fps']}")
    for merge in result["false_merges"]:
        print(f"false merge {merge['unknown_id']}: {merge['people']} {merge.get('similarities', '')}")
    for split in result["splits"]:
        print(f"split {split['person']}: {split['clusters']} {split.get('similarities', '')}")


def _cell(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reel_clusters", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--people", type=int, default=10, help="bench.reel's --people (default 10)")
    parser.add_argument("--seconds", type=float, default=30.0, help="reel length (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--redis-url", default=None, help="default: a scratch embedded Redis")
    parser.add_argument("--keep", type=Path, default=None, help="copy the truth, tracks, events and summaries here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="run.py config override")
    args = parser.parse_args(argv)

    from bench.cli import finish
    from pipeline.core.errors import FacestreamError

    # RuntimeError: run.py failed (bench/reel/facestream.py's _call says how, with its stderr).
    return finish(lambda: reel_clusters(args.seed, args.people, args.seconds, args.redis_url, args.set, args.keep),
                  args.json, print_table, errors=(FacestreamError, RuntimeError))


if __name__ == "__main__":
    sys.exit(main())
