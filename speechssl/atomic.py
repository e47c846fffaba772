"""Atomic file writes and temporary directories beside their target, cleaned when stale.

``atomic_open`` writes to a temporary file beside the target, then renames it: a reader
never sees a half-written file, and a crash leaves the old file (or none).
``temp_dir_beside`` makes a staging directory that a finished step renames into place.

Every temporary name records its owner, ``.<target>.~<host>~<pid>~<random>.tmp``, so that a
later run can tell debris (the owner is a dead process of this host) from work in progress
and remove it (:func:`remove_stale`); both helpers do so for their own target before they
start. Files and directories get the permissions ``open``/``mkdir`` would give them under
the user's umask (``mkstemp``/``mkdtemp`` alone make them 0600/0700).
"""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ["atomic_open", "atomic_write_text", "atomic_write_bytes", "atomic_torch_save", "temp_dir_beside",
           "temp_name_prefix", "remove_stale", "umask"]

_log = logging.getLogger(__name__)

# .<target>.~<host>~<pid>~<random><suffix>; <suffix> is .tmp (staging) or .old (a replaced directory)
_OWNED = re.compile(r"^\.(?P<target>.+)\.~(?P<host>[^~/]*)~(?P<pid>\d+)~[^~/]*\.(?:tmp|old)$")
# what older versions left: .<target>.<random>.tmp (mkstemp/mkdtemp without an owner)
_UNOWNED = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{6,12}\.(?:tmp|old)$")
#: seconds after which a temporary entry with no live owner we can check (another host, or an
#: old unstamped name) counts as debris
UNOWNED_AGE_S = 24 * 3600.0


def umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_umask = umask  # the old private name


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "host"


def temp_name_prefix(target: str | Path) -> str:
    """``.<name>.~<host>~<pid>~``: the start of this process's temporary names for ``target``."""
    return f".{Path(target).name}.~{_host()}~{os.getpid()}~"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def _is_stale(entry: Path, unowned_age_s: float) -> bool:
    m = _OWNED.match(entry.name)
    if m and m.group("host") == _host():
        return not _pid_alive(int(m.group("pid")))
    if m or _UNOWNED.match(entry.name):
        try:
            age = time.time() - entry.lstat().st_mtime
        except FileNotFoundError:
            return False
        return age >= unowned_age_s
    return False


def remove_stale(directory: str | Path, target: str | None = None, *,
                 unowned_age_s: float = UNOWNED_AGE_S) -> list[Path]:
    """Remove what killed writers left in ``directory``: temporary files and directories of
    :func:`atomic_open`, :func:`temp_dir_beside` and replaced directories (``.old``).

    An entry is debris when its owner (recorded in the name) is a process of this host that
    no longer runs; an entry of another host or with an old unstamped name, when it is older
    than ``unowned_age_s`` seconds (0: always, for a directory the caller owns alone).

    Args:
        directory: where to look (not recursive); a missing directory has no debris.
        target: only the temporaries of this file name (``"checkpoint_last.pt"``); glob
            characters allowed (``"checkpoint*"``). None: every target.

    Returns:
        the removed paths (each also logged).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    pattern = f".{target or '*'}.*"
    removed = []
    for entry in sorted(directory.glob(pattern)):
        if not _is_stale(entry, unowned_age_s):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        if not entry.exists():
            _log.info("removed %s, left by an interrupted earlier run", entry)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched; what a
    killed process leaves is removed by the next write of ``path`` (or :func:`remove_stale`).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, glob.escape(path.name))
    fd, tmp = tempfile.mkstemp(prefix=temp_name_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            os.fchmod(f.fileno(), 0o666 & ~umask())  # mkstemp makes 0o600; give open()'s usual mode
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def temp_dir_beside(target: str | Path, suffix: str = ".tmp") -> Path:
    """A new, empty directory beside ``target`` (to fill, then rename to ``target``).

    Stale staging directories of ``target`` left by killed runs are removed first. The
    directory gets ``mkdir``'s usual mode under the umask (not ``mkdtemp``'s 0700), so the
    renamed result has the same permissions as any other directory the user creates.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target.parent, glob.escape(target.name))
    tmp = Path(tempfile.mkdtemp(prefix=temp_name_prefix(target), suffix=suffix, dir=target.parent))
    os.chmod(tmp, 0o777 & ~umask())
    return tmp


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
