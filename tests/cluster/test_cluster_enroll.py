"""enroll.py against a Redis Cluster with `redis.wait_replicas=1`: a real photo enrolled, confirmed by the
replica, listed back; the setting reaches the store (a paused replica makes the same command fail plainly)."""

from __future__ import annotations

import json
import signal

import enroll

PHOTO = "ageitgey_face_recognition_examples/reference_photos/lin-manuel-miranda.png"


def run_enroll(redis_cluster, tmp_path, *command: str) -> int:
    return enroll.main(["--redis-url", redis_cluster.url, "--gallery", "cluster-cli", "--set",
                        f"redis.state_dir={tmp_path}", "--set", "redis.wait_replicas=1",
                        "--set", "redis.wait_timeout_ms=500", "--json", *command])


def test_enrolment_on_a_cluster_waits_for_the_replica(redis_cluster, shared_data, tmp_path, capsys):
    assert run_enroll(redis_cluster, tmp_path, "add", "--name", "Lin", str(shared_data / PHOTO)) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["accepted"] == 1 and added["identities"][0]["templates"] == 1
    assert run_enroll(redis_cluster, tmp_path, "list") == 0
    assert [p["name"] for p in json.loads(capsys.readouterr().out)["identities"]] == ["Lin"]

    replica = redis_cluster.replica_of(redis_cluster.master_of("fs:{cluster-cli}:meta"))
    replica.proc.send_signal(signal.SIGSTOP)  # the replica stops confirming: WAIT times out
    try:
        assert run_enroll(redis_cluster, tmp_path, "rename", "Lin", "Lin-Manuel") == enroll.EXIT_ERROR
        assert "replica" in capsys.readouterr().err
    finally:
        replica.proc.send_signal(signal.SIGCONT)
