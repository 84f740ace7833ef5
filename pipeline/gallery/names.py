"""Identity names (and template ids): what the gallery accepts, normalised to NFC.

A name is shown to people and used as a key, so two spellings of one name must be one key (NFC), and a
name must be safe to print, log and use as a file name (no control characters, no path separators).
"""

from __future__ import annotations

import unicodedata

from pipeline.core.errors import GalleryError

MAX_NAME_CHARS = 200
MAX_TEMPLATE_ID_CHARS = 256
_SEPARATORS = ("/", "\\")
# Cc: C0/C1 controls (incl. NUL, tab, newline); Cs: lone surrogates (not encodable as UTF-8);
# Zl/Zp: line and paragraph separators, which break log lines just like a newline.
_FORBIDDEN_CATEGORIES = {"Cc": "a control character", "Cs": "a lone surrogate",
                         "Zl": "a line separator", "Zp": "a paragraph separator"}


def validate_name(name: str) -> str:
    """`name` in NFC if the gallery accepts it, else GalleryError naming the problem."""
    if not isinstance(name, str):
        raise GalleryError(f"identity name must be a string, got {type(name).__name__}")
    if not name:
        raise GalleryError("identity name is empty")
    text = _normalised(name, "identity name")
    if len(text) > MAX_NAME_CHARS:
        raise GalleryError(f"identity name is {len(text)} characters long; at most {MAX_NAME_CHARS} allowed "
                           f"(starts {text[:40]!r})")
    if text.isspace():
        raise GalleryError(f"identity name {text!r} is only whitespace")
    if text != text.strip():
        # "Ada" and "Ada " would be two people nobody can tell apart on screen.
        raise GalleryError(f"identity name {text!r} starts or ends with whitespace")
    for sep in _SEPARATORS:
        if sep in text:
            raise GalleryError(f"identity name {text!r} contains the path separator {sep!r}")
    return text


def validate_template_id(template_id: str) -> str:
    """`template_id` in NFC if usable (non-empty, short, no control characters), else GalleryError."""
    if not isinstance(template_id, str):
        raise GalleryError(f"template id must be a string, got {type(template_id).__name__}: {template_id!r}")
    if not template_id:
        raise GalleryError("template id is empty")
    text = _normalised(template_id, "template id")
    if len(text) > MAX_TEMPLATE_ID_CHARS:
        raise GalleryError(f"template id is {len(text)} characters long; at most {MAX_TEMPLATE_ID_CHARS} allowed")
    return text


def _normalised(text: str, what: str) -> str:
    for position, char in enumerate(text):
        problem = _FORBIDDEN_CATEGORIES.get(unicodedata.category(char))
        if problem:
            raise GalleryError(f"{what} {text!r} contains {problem} (U+{ord(char):04X}) at position {position}")
    return unicodedata.normalize("NFC", text)
