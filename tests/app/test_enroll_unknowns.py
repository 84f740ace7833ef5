"""enroll.py's unknown-people commands as an operator runs them (subprocesses, real Redis, real LFW photos):
photos seen by run.py become unknown people, who are listed, searched, shown with their crops, named, rejected,
and forgotten; bad input is one line on stderr and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GALLERY = "test-enroll-unknowns"


def photos(shared_data: Path, person: str, start: int, count: int) -> list[str]:
    return [str(p) for p in sorted((shared_data / "lfw" / "images" / person).glob("*.jpg"))[start:start + count]]


@pytest.fixture
def cli(redis_server):
    def run(*args: str, expect: int | None = 0, script: str = "enroll.py"):
        command = [sys.executable, str(REPO / script), "--redis-url", redis_server.url, "--gallery", GALLERY, *args]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        if expect is not None:
            assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done
    return run


def as_json(done) -> dict:
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json must print one line, got {done.stdout!r}"
    return json.loads(lines[0])


def test_seen_listed_searched_named_rejected_forgotten(cli, redis_server, shared_data, tmp_path):
    client = redis_server.client()
    for key in client.scan_iter(f"fs:{{{GALLERY}}}:*"):
        client.delete(key)
    seen = photos(shared_data, "Colin_Powell", 0, 3) + photos(shared_data, "Tony_Blair", 0, 1)
    cli(*[a for p in seen for a in ("--source", p)], "--output", str(tmp_path / "photos"), script="run.py")

    clusters = as_json(cli("unknowns", "list", "--json"))["clusters"]
    assert len(clusters) >= 2
    probe = photos(shared_data, "Colin_Powell", 10, 1)[0]
    faces = as_json(cli("search", probe, "--json"))["faces"]
    main = max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
    [powell] = [f for f in main["found"] if f["kind"] == "unknown"]
    assert len(powell["sightings"]) == 3 and {s["camera"] for s in powell["sightings"]} == {"photos"}

    shown = as_json(cli("unknowns", "show", powell["id"], "--crops", str(tmp_path / "crops"), "--json"))
    assert shown["sightings"] == 3 and len(shown["crops"]) == 3
    assert all(Path(p).read_bytes()[:2] == b"\xff\xd8" for p in shown["crops"])

    named = as_json(cli("unknowns", "name", powell["id"], "Colin Powell", "--json"))
    assert named["created"] and named["templates_added"] >= 1 and named["sightings_moved"] == 3
    listed = as_json(cli("list", "--json"))["identities"]
    assert [i["name"] for i in listed] == ["Colin Powell"]
    faces = as_json(cli("search", probe, "--json"))["faces"]
    main = max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
    assert [f["id"] for f in main["found"] if f["kind"] == "identity"] == ["Colin Powell"]

    rejected = as_json(cli("reject", "--face", seen[-1], "--not", "Colin Powell", "--json"))
    assert rejected["added"] == 1
    removed = as_json(cli("remove", "Colin Powell", "--json"))
    assert removed["sightings_removed"] == 3
    assert not [k for k in client.scan_iter(f"fs:{{{GALLERY}}}:neg*")]
    left = as_json(cli("unknowns", "list", "--json"))["clusters"]
    blair = left[0]["id"]
    assert as_json(cli("unknowns", "forget", blair, "--json"))["sightings_removed"] == 1
    assert as_json(cli("unknowns", "list", "--json"))["clusters"] == [c for c in left if c["id"] != blair]
    assert as_json(cli("unknowns", "purge", "--json"))["sightings_removed"] == 0


@pytest.mark.parametrize("args, message", [
    (["unknowns", "show", "unknown-zz"], "not an unknown-person id"),
    (["unknowns", "name", "unknown-00000000", "Somebody"], "no unknown person unknown-00000000"),
    (["unknowns", "merge", "unknown-00000000", "unknown-00000000"], "into itself"),
    (["reject"], "reject needs EVENT_ID"),
    (["reject", "abc", "--not", "X"], "reject takes EVENT_ID, or --face"),
    (["reject", "0123456789abcdef"], "no kept face for event"),
    (["search", "/no/such/photo.jpg"], "/no/such/photo.jpg"),
])
def test_bad_input_is_one_line_and_exit_2(redis_server, capsys, args, message):
    import enroll

    assert enroll.main(["--redis-url", redis_server.url, "--gallery", GALLERY, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


def test_a_harmonic_models_unknowns_are_never_named_into_the_older_models_gallery(cli, redis_server, shared_data,
                                                                                 tmp_path, enrol_photos,
                                                                                 harmonic_card, capsys):
    """run.py with a v2 model harmonic with the gallery's v1 records v2 sightings; enroll.py refuses to name them
    into the v1 gallery (one line, exit 2, both models, the way out) and the gallery stays byte for byte as it
    was; search compares them only with a face of a model they can be compared with."""
    import enroll
    from pipeline.core.model_card import load_card
    from pipeline.recognise.embedder import DEFAULT_MODEL
    from pipeline.unknowns.sightings import UnknownStore

    v1, v2 = load_card(DEFAULT_MODEL).fingerprint, load_card(harmonic_card).fingerprint
    client = redis_server.client()
    for key in client.scan_iter(f"fs:{{{GALLERY}}}:*"):
        client.delete(key)
    enrol_photos(GALLERY, {"Tony Blair": "lfw/images/Tony_Blair/Tony_Blair_0001.jpg"})
    seen = photos(shared_data, "Colin_Powell", 0, 3)
    cli("--model", str(harmonic_card), *[a for p in seen for a in ("--source", p)], "--output",
        str(tmp_path / "photos"), script="run.py")
    clusters = UnknownStore(client, GALLERY).clusters()
    assert clusters and {c.model for c in clusters} == {v2}
    powell = max(clusters, key=lambda c: c.sightings).id

    def main(*args: str, expect: int) -> tuple[str, str]:
        capsys.readouterr()
        assert enroll.main(["--redis-url", redis_server.url, "--gallery", GALLERY, *args]) == expect
        return capsys.readouterr()

    before = {k: client.dump(k) for k in client.scan_iter(f"fs:{{{GALLERY}}}:*")}
    for model in ([], ["--model", str(harmonic_card)]):
        _, err = main(*model, "unknowns", "name", powell, "Colin Powell", expect=2)
        assert err.startswith(f"error: unknown person {powell} was seen by model {v2}, but gallery {GALLERY!r} "
                              f"holds templates of model {v1}") and len(err.strip().splitlines()) == 1, err
        assert f"enroll.py --gallery {GALLERY} migrate --model NEW_CARD.json" in err
    _, err = main("search", photos(shared_data, "Colin_Powell", 10, 1)[0], expect=2)  # a v1 face
    assert f"hold faces of model {v2}, which a face embedded by model {v1} cannot be compared with" in err
    assert {k: client.dump(k) for k in client.scan_iter(f"fs:{{{GALLERY}}}:*")} == before

    out, _ = main("--model", str(harmonic_card), "search", photos(shared_data, "Colin_Powell", 10, 1)[0], "--json",
                  expect=0)
    faces = json.loads(out)["faces"]
    assert powell in {f["id"] for face in faces for f in face["found"] if f["kind"] == "unknown"}
