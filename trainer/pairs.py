"""LFW pairs files: the verification protocol's list of same/different image pairs, split into folds.

Two layouts exist:

- View 2 (`pairs.txt`): a header `folds<TAB>n`, then for each fold n matched lines (`name i j`) followed
  by n mismatched lines (`name1 i name2 j`), so folds x 2n lines in all.
- View 1 (`pairsDevTrain.txt` / `pairsDevTest.txt`): one fold. The official copies start with a one-number
  header (`n`: n matched lines, then n mismatched); some copies drop the header, and the lines then say
  what they are by their field count (3 = matched, 4 = mismatched).

Image `i` of person `name` is `<images>/<name>/<name>_<i:04d>.jpg`. Folds are numbered from 1 in file order
(a file holding folds 2,3,4,6,7,8,10 of the original ten calls them 1..7: the file does not record the
original numbers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from pipeline.core.errors import SourceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """Two images and whether they show the same person; `fold` counts from 1, `line` is 1-based in the file."""

    first: Path
    second: Path
    same: bool
    fold: int
    line: int


def image_path(images: Path, name: str, number: int) -> Path:
    return images / name / f"{name}_{number:04d}.jpg"


def read_pairs(path: str | Path, images: str | Path, folds: Iterable[int] | None = None) -> list[Pair]:
    """Every pair in an LFW pairs file (View 1 or View 2), optionally only those in `folds` (1-based)."""
    path, images = Path(path), Path(images)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceError(f"cannot read pairs file {path}: {exc}") from exc
    rows = [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not rows:
        raise SourceError(f"{path}: pairs file is empty")
    header = _parse_header(path, *rows[0])
    if header is not None:
        rows = rows[1:]
    pairs = [_parse_pair(path, number, fields, images) for number, fields in rows]
    pairs = _assign_folds(path, pairs, header)
    if folds is not None:
        pairs = select_folds(pairs, folds, source=path)
    log.debug("%s: %d pairs (%d matched)", path, len(pairs), sum(p.same for p in pairs))
    return pairs


def select_folds(pairs: Sequence[Pair], folds: Iterable[int], source: str | Path = "pairs") -> list[Pair]:
    """The pairs whose fold is in `folds`; an unknown fold number is an error, not an empty result."""
    wanted = sorted(set(int(f) for f in folds))
    present = sorted({p.fold for p in pairs})
    missing = [f for f in wanted if f not in present]
    if not wanted or missing:
        raise SourceError(f"{source}: folds {missing or wanted} requested, but the file has folds "
                          f"{_ranges(present)} (numbered from 1 in file order)")
    return [p for p in pairs if p.fold in wanted]


def parse_folds(text: str) -> list[int]:
    """`"6,8"` or `"2-4,7"` -> [6, 8] / [2, 3, 4, 7] (for a `--folds` option)."""
    folds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            lo, _, hi = part.partition("-")
            folds.extend(range(int(lo), int(hi or lo) + 1))
        except ValueError as exc:
            raise ValueError(f"bad fold list {text!r}: expected numbers like '6,8' or '2-4,7'") from exc
    return folds


def fold_count(pairs: Sequence[Pair]) -> int:
    return len({p.fold for p in pairs})


def _parse_header(path: Path, number: int, fields: list[str]) -> tuple[int, int] | None:
    """(folds, n) for a View-2 header, (1, n) for a View-1 header, None when the first line is already a pair."""
    if len(fields) not in (1, 2) or not all(f.isdigit() for f in fields):
        return None
    values = [int(f) for f in fields]
    folds, n = (1, values[0]) if len(values) == 1 else (values[0], values[1])
    if folds < 1 or n < 1:
        raise SourceError(f"{path}:{number}: header {' '.join(fields)!r} must give positive counts")
    return folds, n


def _parse_pair(path: Path, number: int, fields: list[str], images: Path) -> Pair:
    try:
        if len(fields) == 3:
            name, i, j = fields
            return Pair(image_path(images, name, _index(i)), image_path(images, name, _index(j)), True, 1, number)
        if len(fields) == 4:
            name1, i, name2, j = fields
            return Pair(image_path(images, name1, _index(i)), image_path(images, name2, _index(j)), False, 1, number)
    except ValueError as exc:
        raise SourceError(f"{path}:{number}: {exc} in {' '.join(fields)!r}") from exc
    raise SourceError(f"{path}:{number}: expected 3 fields (name i j) or 4 (name1 i name2 j), "
                      f"got {len(fields)}: {' '.join(fields)!r}")


def _index(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"image number must be a positive integer, got {text!r}")
    return int(text)


def _assign_folds(path: Path, pairs: list[Pair], header: tuple[int, int] | None) -> list[Pair]:
    """Check the header's layout (per fold: n matched, then n mismatched) and number the folds."""
    if header is None:
        return pairs  # headerless View 1: one fold, any order
    folds, n = header
    if len(pairs) != folds * 2 * n:
        raise SourceError(f"{path}: header says {folds} fold(s) x (2 x {n}) = {folds * 2 * n} pairs, "
                          f"but the file holds {len(pairs)}")
    numbered = []
    for k, pair in enumerate(pairs):
        fold, within = divmod(k, 2 * n)
        expect_same = within < n
        if pair.same != expect_same:
            kind = "matched (3 fields)" if expect_same else "mismatched (4 fields)"
            raise SourceError(f"{path}:{pair.line}: expected a {kind} pair here (fold {fold + 1}, "
                              f"pair {within + 1} of {2 * n})")
        numbered.append(Pair(pair.first, pair.second, pair.same, fold + 1, pair.line))
    return numbered


def _ranges(values: list[int]) -> str:
    return ",".join(str(v) for v in values) if len(values) < 4 else f"{values[0]}-{values[-1]}"
