"""The C allocator's settings for a long-running streaming process (glibc only; elsewhere nothing to do).

glibc gives each thread that allocates its own malloc arena, up to 8 per core. A streaming run decodes frames
in one reader thread per camera and frees them in the detector and recognise threads, so freed blocks land in
arenas that other threads rarely reuse and RSS creeps up for a long time before it levels off. Two arenas keep
the soak's RSS about 150 MB lower and level within minutes (bench.soak), at no measurable cost in fps: the
hot paths allocate a few large buffers per frame, not many small ones.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # from glibc's malloc.h
STREAMING_ARENAS = 2


def limit_malloc_arenas(arenas: int = STREAMING_ARENAS) -> bool:
    """Cap glibc's malloc arenas (call before worker threads start); False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False
    if libc.mallopt(M_ARENA_MAX, arenas) != 1:
        log.warning("glibc refused mallopt(M_ARENA_MAX, %d); keeping its default arenas", arenas)
        return False
    log.debug("glibc malloc arenas capped at %d", arenas)
    return True
