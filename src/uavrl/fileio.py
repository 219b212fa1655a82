"""Files that a crash must never leave half-written."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, text: str | bytes) -> None:
    """Replace ``path`` with ``text`` (or bytes) so that a reader, or a kill at any instant, sees
    the old file or the new one, never a part: write a temporary file beside it, flush it to
    disk, then rename it over ``path``."""
    staged = path.with_name(f".{path.name}.tmp")
    with staged.open("wb" if isinstance(text, bytes) else "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(staged, path)
