"""What a gallery write decided from its reads, and how another writer's commands join it.

A write is two steps inside one WATCH (store.py `_commit`): a prepare step reads and returns a `Plan`, then the
plan's commands and its change-stream entry are queued in one MULTI/EXEC. A `Hook` lets a writer of other keys
under the gallery's hash tag (unknown people's sightings) add its commands to that same MULTI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.core.errors import GalleryError

# also(identity_id) -> writer(pipe): called in the prepare step, so it reads the state the write commits against.
Hook = Callable[[str], Callable[[Any], None]]


@dataclass
class Plan:
    """A write's result, the commands to queue, the change to log (`op` None: nothing to write)."""

    result: Any
    write: Callable[[Any], None] = lambda pipe: None
    op: str | None = None
    ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


def with_hook(plan: Plan, also: Hook | None, identity_id: str, name: str, op: str | None = None) -> Plan:
    """`plan` plus the commands of `also(identity_id)`. A hooked plan always writes (as `op` if it had
    nothing of its own): the other writer's commands must land even when the gallery part is a no-op."""
    if also is None:
        return plan
    extra = also(identity_id)
    if not callable(extra):
        raise GalleryError(f"a gallery write hook must return a writer (a callable taking the pipeline), "
                           f"got {type(extra).__name__}")
    own = plan.write

    def write(pipe) -> None:
        own(pipe)
        extra(pipe)
    return replace(plan, write=write, op=plan.op or op, ids=plan.ids or [identity_id], names=plan.names or [name])
