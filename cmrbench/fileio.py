"""The few file operations every layer needs: content hashes, atomic writes and exclusive locks."""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(fh)`` on a temporary binary file beside ``path``, then rename it into place, so a crash
    never leaves a truncated file; the file gets ordinary permissions (mkstemp would make it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 text."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


class LockedError(RuntimeError):
    """Another process holds the lock: it is writing the same files."""


@contextmanager
def exclusive_lock(path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` for the block, or fail at once if another process holds it.

    ``flock`` locks belong to the process: one that dies releases its lock, so a crash never leaves a stale
    one behind. The lock file says who holds it and is removed on release; a process that locked a file
    removed in the meantime takes a fresh one. Where ``fcntl`` does not exist (Windows), nothing is locked.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "a process"
            os.close(fd)
            raise LockedError(f"{what} is being written by {holder}; wait for it to finish or stop it, then run "
                              f"again (the lock, {path}, goes away with that process)") from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)                      # the holder before us removed this file: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
