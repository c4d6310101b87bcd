"""Artifacts that never lie: files written atomically, hashed, and a lock per build folder.

A file is written to a temporary name in its folder and renamed over the target, so a reader
sees the old file or the whole new one, never a part (an interrupted write leaves only a
``.tmp-*`` file that nothing reads). A build folder is held by one build at a time.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic", "sha256_file", "build_lock", "read_json", "check_writable_folder"]


def write_atomic(path, data):
    """Write ``data`` (str or bytes) to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def sha256_file(path):
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path):
    """The JSON object in ``path``, or None if it is missing, unreadable or not an object."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@contextlib.contextmanager
def build_lock(folder, progress=print):
    """Hold ``folder``'s build lock; a second build of the same design waits for the first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"[build] another build of {folder.name} is running: waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_writable_folder(path, what="--out"):
    """``path`` is a folder we can write into, or one we can create (nothing is created here:
    a refused command leaves no trace); checked before long work."""
    from .errors import UserError
    path = Path(path)
    if "\0" in str(path):
        raise UserError(f"{what}: {str(path)!r} holds a NUL byte; no folder can be named so")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        where = "exists and is not a folder" if existing == path else \
            f"cannot be made: {existing} is not a folder"
        raise UserError(f"{what}: {path} {where}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what}: cannot write to {existing} (permission denied)")
    return path


def build_fingerprint(folder):
    """Hash of what a build is made from: the generated Verilog and the manifest (clocks,
    host link, layouts) in ``folder``, so that a changed generator invalidates an old build
    (a report keeps it as ``fingerprint``)."""
    from .rtl import digest
    folder = Path(folder)
    return digest(*(path.read_bytes() for path in
                    sorted(folder.glob("*.v")) + [folder / "manifest.json"]))
