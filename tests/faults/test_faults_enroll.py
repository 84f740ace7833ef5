"""Faults injected for real around enrolment: `enroll.py add --tree` SIGKILLed while it runs (during model
load and embedding, and in the middle of its gallery writes), and the embedded `redis-server` SIGKILLed and
restarted from its data folder. After each fault the gallery is checked key by key against what the design
guarantees (store.py): an identity is written in one MULTI/EXEC together with its change-stream entry, so
it is there whole (every accepted template of its folder) or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.model_card import ModelCard
from pipeline.gallery import GalleryMirror, GalleryStore, Snapshot
from pipeline.gallery.keys import GalleryKeys, element
from pipeline.gallery.matcher import Matcher
from pipeline.gallery.search import ExactSearch, ServerSearch
from pipeline.gallery.threshold import threshold_from_card
from pipeline.recognise.embedder import DEFAULT_MODEL
from pipeline.redis.server import EmbeddedRedis

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
SEED = 20240611
# LFW people with 4+ photos; each folder of the tree gets 2, 3 or 4 of them (36 photos, a few of which the
# quality gates reject: the expected content is what they accept, not every file).
PEOPLE = ["Aaron_Peirsol", "Abdoulaye_Wade", "Adam_Sandler", "Ahmed_Chalabi", "Ai_Sugiyama", "Al_Sharpton",
          "Albert_Costa", "Allyson_Felix", "Amanda_Bynes", "Angela_Merkel", "Antonio_Banderas", "Ashanti"]

# Enrolled, then restored after redis-server is killed: a non-ASCII name, metadata, a rename and a remove.
SUGIYAMA, RENAMED = "杉山 愛 (Aï Sugiyama)", "Zoë Ångström-Nuñez"
RESTART_PEOPLE = {"Angela_Merkel": "Angela Merkel", "Ai_Sugiyama": SUGIYAMA, "Al_Sharpton": "Al Sharpton",
                  "Amanda_Bynes": "Amanda Bynes"}
METADATA = {"Al Sharpton": {"team": "Überwachung ✓", "badge": 7, "tags": ["ñ", None, 1.5]}}

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason=f"no default model at {DEFAULT_MODEL}")]


# -- helpers ------------------------------------------------------------------------------------------------
def lfw_tree(shared_data: Path, root: Path) -> Path:
    """`root/<person>/` of symlinks to that person's first 2-4 LFW photos (the shared data is never copied)."""
    for i, person in enumerate(PEOPLE):
        (root / person).mkdir(parents=True)
        for image in sorted((shared_data / "lfw" / "images" / person).glob("*.jpg"))[:2 + i % 3]:
            (root / person / image.name).symlink_to(image)
    return root


def enroll_tree(url: str, gallery: str, tree: Path) -> list[str]:
    return [sys.executable, str(REPO / "enroll.py"), "--redis-url", url, "--model", str(DEFAULT_MODEL),
            "--gallery", gallery, "--set", "detector.engine=onnxruntime", "--json", "add", "--tree", str(tree)]


def run_to_end(command: list[str]) -> dict:
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def kill_after(command: list[str], delay_s: float) -> int:
    """Start `command`, SIGKILL it after `delay_s`; its exit status (-9 if the kill landed)."""
    proc = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.wait(delay_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode in (0, -signal.SIGKILL), stderr.decode(errors="replace")
    return proc.returncode


def kill_at_write(command: list[str], client, changes_key: str, writes: int) -> int:
    """Start `command`, SIGKILL it the moment its `writes`-th change-stream entry appears (mid write phase:
    it still has identities to write); the number of entries it had written when the kill landed."""
    tail = client.xrevrange(changes_key, count=1)
    last = tail[0][0] if tail else b"0-0"
    start = int(last.split(b"-")[0])
    proc = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, deadline = 0, time.monotonic() + 120
    try:
        while seen < writes and proc.poll() is None and time.monotonic() < deadline:
            for _, entries in client.xread({changes_key: last}, block=100) or []:
                seen += len(entries)
                last = entries[-1][0]
    finally:
        proc.send_signal(signal.SIGKILL)  # a no-op if it already exited (the assertion below says so)
        stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode} before write {writes}\n{stderr.decode()}"
    tail = client.xrevrange(changes_key, count=1)
    return int(tail[0][0].split(b"-")[0]) - start if tail else 0


def contents(store: GalleryStore) -> dict[str, dict[str, bytes]]:
    """{name: {template id: float32 row bytes}}: a gallery's content, independent of identity ids."""
    out = {}
    for identity in store.identities():
        _, template_ids, matrix = store.read_full(identity.id)
        out[identity.name] = {t: row.tobytes() for t, row in zip(template_ids, matrix, strict=True)}
    return out


def by_identity(snapshot: Snapshot) -> dict[str, tuple[str, bytes]]:
    """{identity id: (name, its rows' bytes)}: a snapshot independent of row order between identities."""
    return {i: (name, np.ascontiguousarray(snapshot.matrix[snapshot.rows_of(i)]).tobytes())
            for i, name in zip(snapshot.identity_ids, snapshot.names, strict=True)}


def check_gallery(store: GalleryStore, expected: dict[str, dict[str, bytes]], fingerprint: str,
                  mirror: GalleryMirror) -> int:
    """Assert every invariant a killed writer must leave intact; the number of identities present."""
    client, keys = store.client, GalleryKeys(store.gallery)
    names = {k.decode(): v.decode() for k, v in client.hgetall(keys.names).items()}
    stored = {k.decode() for k in client.scan_iter(match=keys.pattern, count=1000)}
    identity_keys = {k for k in stored if k.startswith(f"{keys.base}:id:")}
    # No identity without its name, no name without its identity, one identity per name.
    assert identity_keys == {keys.identity(i) for i in names.values()}
    assert len(set(names.values())) == len(names)
    for name, identity_id in names.items():
        identity, template_ids, matrix = store.read_full(identity_id)
        assert identity.name == name and identity.metadata == {}
        # Whole identity: exactly the templates its folder had accepted, bit for bit, and a count that agrees.
        assert {t: row.tobytes() for t, row in zip(template_ids, matrix)} == expected[name], name
        assert identity.templates == len(template_ids) == len(matrix) == store.get(name).templates
    if not names:  # nothing committed: not even the settings or the stream
        assert stored == set()
        return 0
    assert store.meta() == {"format": "1", "dtype": "float32", "dim": "128", "fingerprint": fingerprint,
                            "server_index": "0"}
    assert keys.vset not in stored  # the CLI makes no server-side index: nothing half-indexed either
    # The change stream: numbers 1..head without a gap, one `add` per identity, each identity once.
    entries = store.changes("0-0", count=10_000)
    head, epoch = store.head()
    assert [c.seq for c in entries] == list(range(1, head + 1))
    assert all(c.op == "add" and c.epoch == epoch and len(c.identity_ids) == 1 for c in entries)
    assert sorted(c.identity_ids[0] for c in entries) == sorted(names.values())
    assert {c.identity_ids[0]: c.names[0] for c in entries} == {i: n for n, i in names.items()}
    # A mirror that followed the stream through the kill, a fresh mirror and a fresh snapshot all agree.
    truth = by_identity(store.snapshot())
    assert mirror.wait_for(lambda s: s.seq == head, timeout=10), (mirror.current().stream_id, head)
    assert by_identity(mirror.current()) == truth
    with GalleryMirror(store) as fresh:
        assert fresh.current().seq == head and by_identity(fresh.current()) == truth
    return len(names)


# -- enroll.py SIGKILLed -------------------------------------------------------------------------------------
def test_enroll_tree_killed_at_random_points_leaves_whole_identities(redis_server, redis_client, shared_data,
                                                                     tmp_path):
    """Reference run into a fresh gallery; then 3 SIGKILLs of the same command on another gallery (two at a
    random write of its write phase, one at a random moment of its run), the invariants after each, and a
    final run to completion: the same content as the reference, each identity written once."""
    rng = random.Random(SEED)
    tree = lfw_tree(shared_data, tmp_path / "tree")
    started = time.monotonic()
    report = run_to_end(enroll_tree(redis_server.url, "reference", tree))
    full_run_s = time.monotonic() - started
    reference = GalleryStore(redis_client, "reference")
    expected, fingerprint = contents(reference), reference.fingerprint
    # The reference is what the quality gates accepted: one template per accepted photo, id = its sha256.
    accepted = {}
    for outcome in report["outcomes"]:
        path = Path(outcome["path"])
        assert outcome["accepted"] == (outcome["template_id"] is not None)
        if outcome["accepted"]:
            assert outcome["template_id"] == hashlib.sha256(path.read_bytes()).hexdigest()
            accepted.setdefault(path.parent.name, set()).add(outcome["template_id"])
    assert {name: set(t) for name, t in expected.items()} == accepted
    assert len(expected) == len(PEOPLE) and report["rejected"] > 0, "some photos must fail the gates"

    store = GalleryStore(redis_client, "g")
    command = enroll_tree(redis_server.url, "g", tree)
    with GalleryMirror(store, poll_ms=50) as mirror:
        present = 0
        for most in (len(expected) // 2, len(expected) - 3):
            left = len(expected) - present
            assert left >= 4, "the tree is too small to kill in the middle of the write phase"
            writes = rng.randint(1, min(most - present, left - 3))
            written = kill_at_write(command, redis_client, GalleryKeys("g").changes, writes)
            assert writes <= written < left  # killed in its write phase, identities still to write
            assert check_gallery(store, expected, fingerprint, mirror) == present + written
            present += written
        # At a random moment of a run: most likely while it loads models or embeds, maybe while it writes.
        kill_after(command, rng.uniform(0.2, 1.0) * full_run_s)
        assert check_gallery(store, expected, fingerprint, mirror) >= present
        final = run_to_end(command)
        assert check_gallery(store, expected, fingerprint, mirror) == len(expected)
    assert contents(store) == expected
    # Nothing written twice: identities already there were all duplicates, the others all added.
    assert final["added"] + final["duplicates"] == final["accepted"] == report["accepted"]
    assert final["duplicates"] == sum(len(expected[p["name"]]) for p in final["identities"] if not p["created"])


# -- redis-server SIGKILLed ----------------------------------------------------------------------------------
def gallery_dump(client, gallery: str) -> dict:
    """Every key of the gallery, byte for byte (hashes and the stream), the vector set by its elements."""
    keys, dump = GalleryKeys(gallery), {}
    for key in sorted(client.scan_iter(match=keys.pattern, count=1000)):
        kind = client.type(key).decode()
        if kind == "hash":
            dump[key] = client.hgetall(key)
        elif kind == "stream":
            dump[key] = client.xrange(key)
        else:  # the vector set: each element's attribute and its stored (normalised) vector, raw
            elements = set(client.execute_command("VRANDMEMBER", key, 10_000) or [])
            vector = {e: client.execute_command("VEMB", key, e, "RAW") for e in elements}
            dump[key] = (kind, client.execute_command("VCARD", key),
                         {e: (client.execute_command("VGETATTR", key, e), vector[e]) for e in elements})
    return dump


def check_server_index(store: GalleryStore) -> None:
    """The vector set holds exactly the gallery's templates: one element per template, its identity as
    attribute, its vector (NOQUANT: exact up to the set's own normalisation)."""
    client, keys, found = store.client, GalleryKeys(store.gallery), {}
    for identity in store.identities():
        _, template_ids, matrix = store.read_full(identity.id)
        found.update({element(identity.id, t).encode(): (identity.id, row) for t, row in zip(template_ids, matrix)})
    assert set(client.execute_command("VRANDMEMBER", keys.vset, 10_000)) == set(found)
    for name, (identity_id, row) in found.items():
        assert json.loads(client.execute_command("VGETATTR", keys.vset, name)) == {"identity": identity_id}
        vector = np.asarray(client.execute_command("VEMB", keys.vset, name), np.float32)
        np.testing.assert_allclose(vector, row / np.linalg.norm(row), atol=1e-6)


def enrol_lfw(shared_data: Path, store: GalleryStore) -> tuple[np.ndarray, ModelCard]:
    """Enrol four LFW people (2 photos each; one under a non-ASCII name, one with metadata), rename one and
    remove another; (the embeddings of a held-out photo of each, in RESTART_PEOPLE order; the model card)."""
    from pipeline.app.config import load_app_config
    from pipeline.app.services import make_detector, make_embedder, quality_gates
    from pipeline.recognise.enrollment import Enroller, EnrollmentReport

    cfg = load_app_config(None, ["detector.engine=onnxruntime"])
    embedder = make_embedder(cfg, DEFAULT_MODEL)
    enroller = Enroller(make_detector(cfg), embedder, quality_gates(cfg))
    queries = []
    for person, name in RESTART_PEOPLE.items():
        photos = sorted((shared_data / "lfw" / "images" / person).glob("*.jpg"))
        report, held_out = EnrollmentReport(), EnrollmentReport()
        for photo in photos[:2]:
            enroller.add_file(photo, report)
        enroller.add_file(photos[3], held_out)
        assert len(report.template_ids) == 2 and len(held_out.template_ids) == 1, report.outcomes
        store.add(name, report.matrix(), report.template_ids, embedder.fingerprint, metadata=METADATA.get(name))
        queries.append(held_out.matrix()[0])
    store.rename("Amanda Bynes", RENAMED)
    store.remove("Angela Merkel")  # the AOF replays removes too: her photo must now match nobody
    return np.stack(queries), embedder.card


def test_gallery_survives_redis_sigkill_and_restart(shared_data, tmp_path):
    """Enrol, wait past the AOF's `appendfsync everysec` window, SIGKILL redis-server (no SHUTDOWN, no
    flush), restart it on the same folder: every key bit-exact, and queries match exactly as before."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        store = GalleryStore(server.client(), "g", server_index=True)
        queries, card = enrol_lfw(shared_data, store)
        threshold = threshold_from_card(card)
        before = gallery_dump(store.client, "g")
        people, head = store.identities(), store.head()
        assert [(p.name, p.metadata) for p in people] == [("Al Sharpton", METADATA["Al Sharpton"]), (RENAMED, {}),
                                                          (SUGIYAMA, {})]
        with GalleryMirror(store) as mirror:
            snapshot = by_identity(mirror.current())
            matched = Matcher(ExactSearch(mirror), threshold).match(queries)
        served = Matcher(ServerSearch(store.client, gallery="g"), threshold).match(queries)
        assert [m.identity for m in matched] == [None, SUGIYAMA, "Al Sharpton", RENAMED]
        check_server_index(store)
        # everysec: the AOF is written before replies go out and fsynced within a second (a write may be
        # held up to 2 s while an earlier fsync is still running); wait past the second, then until
        # nothing is left unwritten or unsynced.
        time.sleep(1.2)
        assert wait_until(lambda: aof_settled(store.client.info("persistence")), timeout=5)
        store.client.close()
        killed = server.pid
        os.kill(killed, signal.SIGKILL)
        assert wait_until(lambda: dead(killed), timeout=10), f"redis-server {killed} survived SIGKILL"
        server.stop()  # reaps it and forgets its record; its SHUTDOWN finds nobody to talk to
        server = EmbeddedRedis(tmp_path / "redis").start()
        assert server.owner and server.pid != killed

        store = GalleryStore(server.client(), "g")
        assert gallery_dump(store.client, "g") == before
        check_server_index(store)
        assert store.identities() == people and store.head() == head
        with GalleryMirror(store) as mirror:
            assert by_identity(mirror.current()) == snapshot
            assert Matcher(ExactSearch(mirror), threshold).match(queries) == matched
        assert Matcher(ServerSearch(store.client, gallery="g"), threshold).match(queries) == served
        # The change numbers carry on from the restored head, in the same epoch.
        _, template_ids, rows = store.read_full(people[0].id)
        store.add("Copy", rows, template_ids, store.fingerprint)
        assert store.head() == (head[0] + 1, head[1])
    finally:
        server.stop()


def aof_settled(info: dict) -> bool:
    """Nothing in the AOF buffer that is not written to the file, no fsync still running."""
    return info["aof_buffer_length"] == 0 and info["aof_pending_bio_fsync"] == 0


def dead(pid: int) -> bool:
    """Exited (a zombie counts: nobody has reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
