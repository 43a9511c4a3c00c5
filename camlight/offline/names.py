"""How `explain.py` names an input in what it writes: as text (`shown`) and in a file name (`file_stem`).

An input from `input=` is keyed by its path relative to that folder, exactly as the file system
gave it ("sub/good_cat.jpg", "/" separators, extension included): two files never share a key.
On Linux a name that is not UTF-8 arrives as a str with surrogate escapes (b"caf\\xe9.png" →
"caf\\udce9.png"), which no UTF-8 file can hold; `shown` turns it into text that any file can.
"""

from __future__ import annotations

import hashlib
import os
import re

# A part of a path kept as it is in a file name: letters, digits, ".", "-", and "_" between them.
_PLAIN = re.compile(r"[A-Za-z0-9.-]+(?:_[A-Za-z0-9.-]+)*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_LONGEST = 120  # characters of a file stem (file systems allow 255 bytes; a map's suffix follows)
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127]} | {9: "\\t", 10: "\\n", 13: "\\r"}


def shown(name: str) -> str:
    """`name` as text for CSV, HTML, maps.npz keys, logs and skipped.txt: bytes that are not
    UTF-8 as `\\xe9`, control characters (tab, newline ...) as `\\t`, `\\n`, `\\x1b`.

    Example::

        shown("caf\\udce9.png")  # 'caf\\\\xe9.png'
    """
    return os.fsencode(name).decode("utf-8", "backslashreplace").translate(_CONTROL)


def file_stem(key: str) -> str:
    """A file-name-safe stem for the input keyed `key`, distinct for distinct keys.

    The key itself with "/" as "__" when every part of it is plain (letters, digits, ".", "-",
    and single "_" inside a part: such stems map back to one key only); otherwise the key with
    every other character as "_", cut to 120 characters, then "~" and 10 hex digits of the SHA-1
    of the key's bytes ("a b.png" → "a_b.png~5c1e…", beside a plain "a_b.png"). A plain stem
    has no "~", so it never equals a hashed one.
    """
    parts = key.split("/")
    if len(key) <= _LONGEST and not key.startswith(".") and all(_PLAIN.fullmatch(p) for p in parts):
        return "__".join(parts)
    digest = hashlib.sha1(os.fsencode(key)).hexdigest()[:10]
    readable = _UNSAFE.sub("_", "__".join(parts))[:_LONGEST].lstrip(".")
    return f"{readable}~{digest}"
