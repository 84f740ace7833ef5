"""Finding the photos and videos a user points at: files as given, folders searched recursively.

Folder searches never enter a symlinked folder, as `Path.rglob` does not either: a link back up the tree
(`DIR/loop -> DIR`) would otherwise be walked forever, or find every photo twice. Such links are named in the
error when a folder turns out to hold nothing usable, since "0 inputs" alone does not say why.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pipeline.core.errors import SourceError
from pipeline.core.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES

MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


def find_files(folder: str | Path, suffixes: Iterable[str] = MEDIA_SUFFIXES) -> list[Path]:
    """Files under `folder` (at any depth) whose lower-cased extension is in `suffixes`, sorted."""
    return _search(Path(folder), frozenset(suffixes))[0]


def expand_inputs(inputs: Iterable[str | Path], suffixes: Iterable[str] = MEDIA_SUFFIXES) -> list[Path]:
    """Files as given, folders replaced by `find_files(folder, suffixes)`, in the order given.

    A file named explicitly is kept whatever its extension (reading it says whether it is an image). A path
    that does not exist, or a folder holding no matching file, raises SourceError before anything is done.
    """
    suffixes = frozenset(suffixes)
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found, links = _search(item, suffixes)
            if not found:
                raise SourceError(_nothing_found(item, suffixes, links))
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise SourceError(f"input {item} does not exist")
    return files


def _search(folder: Path, suffixes: frozenset[str]) -> tuple[list[Path], list[Path]]:
    """(matching files, symlinked folders not entered) under `folder`."""
    files: list[Path] = []
    links: list[Path] = []
    for top, dirs, names in os.walk(folder, followlinks=False):
        links += [Path(top, d) for d in dirs if os.path.islink(os.path.join(top, d))]
        files += [path for path in map(Path, (os.path.join(top, n) for n in names))
                  if path.suffix.lower() in suffixes and path.is_file()]  # is_file: no dangling links
    return sorted(files), sorted(links)


def _nothing_found(folder: Path, suffixes: frozenset[str], links: list[Path]) -> str:
    kinds = " or ".join(kind for kind, known in (("images", IMAGE_SUFFIXES), ("videos", VIDEO_SUFFIXES))
                        if suffixes & known) or "files"
    message = f"no {kinds} found in {folder} (searched for {', '.join(sorted(suffixes))})"
    if links:
        shown = ", ".join(str(link) for link in links[:3]) + (", ..." if len(links) > 3 else "")
        message += f"; links to folders are not followed: {shown}"
    return message
