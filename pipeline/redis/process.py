"""The embedded redis-server as a child process: started so that it dies with us, stopped, and watched.

Linux's parent-death signal stops a server whose parent was killed (no orphan keeps the AOF open);
`pid_alive`/`cwd_of` let a later process tell a live server on its data folder from a stale record.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_FORK_LOCK = threading.Lock()
_FORK_QUEUE: queue.SimpleQueue | None = None


def die_with_parent():
    """A preexec_fn asking Linux to SIGTERM the child when its parent dies (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: no dlopen in the child
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def popen_from_lasting_thread(*args, **kwargs) -> subprocess.Popen:
    """Popen from the main thread, or from one daemon thread that lives as long as the process.

    The parent-death signal fires when the *thread* that forked exits, not the process: a server
    started from a short-lived worker thread would otherwise die with that thread.
    """
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(*args, **kwargs)
    result = Future()
    _forker().put((result, args, kwargs))
    return result.result()


def _forker() -> queue.SimpleQueue:
    global _FORK_QUEUE
    with _FORK_LOCK:
        if _FORK_QUEUE is None:
            _FORK_QUEUE = queue.SimpleQueue()
            threading.Thread(target=_fork_forever, args=(_FORK_QUEUE,), name="redis-server-forker",
                             daemon=True).start()
        return _FORK_QUEUE


def _fork_forever(requests: queue.SimpleQueue) -> None:
    while True:
        result, args, kwargs = requests.get()
        try:
            result.set_result(subprocess.Popen(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            result.set_exception(exc)


def stop_child(proc: subprocess.Popen, timeout: float) -> None:
    terminate(proc.pid, timeout)
    proc.wait()  # reap it


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM (Redis flushes the AOF and exits), then SIGKILL if it is still there after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)
        log.warning("redis-server pid %d ignored %s", pid, sig.name)


def pid_alive(pid: int) -> bool:
    """Running (zombies count as dead: an exited server nobody has reaped yet)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def cwd_of(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None
