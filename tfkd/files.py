"""Atomic file writes: a crash never leaves a truncated artifact under its final name. A
lock for directories that several processes fill."""

import contextlib
import errno
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it to `path` only if the block succeeds.

    The temporary name keeps the extension, because savers such as Keras' `.keras` format
    choose the format from it.
    """
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    base, extension = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{extension}", dir=directory)
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise OSError(
                errno.ENOSPC,
                f"No space left on the device while writing {path}. Nothing was replaced: "
                "earlier artifacts are intact. Free some space and rerun; finished stages are "
                "skipped.",
            ) from error
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def locked(directory: str) -> Iterator[None]:
    """Holds an exclusive lock on `directory` (waiting for it): runs that share a directory
    (the trials of a search) fill it once, the others wait and then read what it holds. The
    kernel releases the lock when its process ends, however it ends."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, ".lock"), "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def hash_path(digest, path: str) -> None:
    """Feeds a file's bytes, or a directory's relative names and file bytes in sorted order, to
    `digest` (a hashlib object), reading in blocks."""
    if os.path.isdir(path):
        for root, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(root, name)
                digest.update(os.path.relpath(full, path).encode())
                hash_path(digest, full)
        return
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    hash_path(digest, path)
    return digest.hexdigest()
