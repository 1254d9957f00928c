"""Files only their owner may read (the secret key, the demo logins), private from the first byte.

Writing a file and then ``chmod``-ing it leaves a moment when it is readable by anyone the umask
lets in. These files are created with mode 0o600 by ``os.open`` (the umask can only take bits
away), under a temporary name in the same folder, then moved into place in one step, so a reader
sees either no file or the whole of it. No Django here: settings.py uses it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def private_file_write(path: Path, text: str, *, replace: bool = True) -> bool:
    """Write ``text`` to ``path``, readable and writable by its owner only.

    ``replace=False`` keeps a file already there (the first of two processes wins, and the
    other reads what it wrote). Returns whether ``path`` now holds ``text``.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
            return True
        try:
            os.link(temporary, path)  # fails when the file exists, unlike a rename
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)
