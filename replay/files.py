"""Durable file operations: fsync, atomic replace, file copy and directory mirroring."""

import errno
import os
import shutil
from pathlib import Path

from replay.errors import ReplayDiskFullError


def fsync_file(path: Path):
    """Flush one file's data to the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path):
    """Flush a directory's entries, so that files created or renamed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_via_temp(dst: Path, fill, what: str, durable: bool):
    """`fill(tmp)` writes a temp file that then replaces `dst` in one rename (fsynced when
    durable), so `dst` is never half-written; a failure removes the temp file."""
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        fill(tmp)
        if durable:
            fsync_file(tmp)
        os.replace(tmp, dst)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise_if_disk_full(error, what)
        raise
    if durable:
        fsync_dir(dst.parent)


def atomic_write(path: Path, data: bytes, durable: bool = True):
    """Replace `path` by `data` all at once: write a temp file, fsync it, rename, fsync the dir."""
    def fill(tmp):
        with open(tmp, "wb") as handle:
            handle.write(data)

    _write_via_temp(path, fill, f"writing {path}", durable)


def copy_file(src: Path, dst: Path, durable: bool = True):
    """Copy one file (contents and mtime) through a temp file, so `dst` is never half-written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    _write_via_temp(dst, lambda tmp: shutil.copy2(src, tmp), f"copying {src} to {dst}", durable)


def mirror_tree(src: Path, dst: Path, durable: bool = True):
    """Make `dst` a copy of file or directory `src`: copy changed files, delete vanished ones.

    Files count as unchanged when size and mtime agree (copies keep the mtime). A
    missing `src` leaves `dst` alone, so a not-yet-written checkpoint never erases
    the stored one.
    """
    if not src.exists():
        return
    if src.is_file():
        if dst.is_dir():
            shutil.rmtree(dst)
        if not same_file(src, dst):
            copy_file(src, dst, durable)
        return
    if dst.exists() and not dst.is_dir():
        dst.unlink()
    dst.mkdir(parents=True, exist_ok=True)
    wanted = {entry.name for entry in src.iterdir()}
    for entry in dst.iterdir():
        if entry.name in wanted:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for name in sorted(wanted):
        mirror_tree(src / name, dst / name, durable)


def same_file(a: Path, b: Path) -> bool:
    if not b.is_file():
        return False
    sa, sb = a.stat(), b.stat()
    return sa.st_size == sb.st_size and sa.st_mtime_ns == sb.st_mtime_ns


def directory_bytes(path: Path) -> int:
    """Bytes of all regular files under `path`."""
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            total += os.lstat(os.path.join(root, name)).st_size
    return total


def raise_if_disk_full(error: OSError, what: str):
    """Turn ENOSPC/EDQUOT into one clear ReplayDiskFullError; other errors pass through."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        raise ReplayDiskFullError(
            error.errno,
            f"disk full while {what}; everything committed before stays readable and staged "
            "steps stay in memory: free space, then call flush() again",
        ) from error
