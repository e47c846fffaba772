"""speechssl.atomic: outputs get the user's umask permissions; debris of killed writers is removed,
work in progress of live ones is not."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from speechssl.atomic import (
    atomic_open, atomic_write_text, remove_stale, temp_dir_beside, temp_name_prefix,
)


@pytest.fixture(params=[0o022, 0o002, 0o077])
def user_umask(request: pytest.FixtureRequest):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_files_and_temp_dirs_follow_the_umask(tmp_path: Path, user_umask: int) -> None:
    atomic_write_text(tmp_path / "a.txt", "x")
    assert _mode(tmp_path / "a.txt") == 0o666 & ~user_umask
    d = temp_dir_beside(tmp_path / "out")
    assert _mode(d) == 0o777 & ~user_umask
    d.rename(tmp_path / "out")
    assert _mode(tmp_path / "out") == 0o777 & ~user_umask


def test_model_dirs_follow_the_umask(tmp_path: Path, user_umask: int) -> None:
    from speechssl._hub.modeldir import WeightsRecord, write_model_dir

    record = WeightsRecord(method="toy", config={"dim": 2}, state_dict={"w": torch.zeros(2)})
    out = write_model_dir(tmp_path / "m", record)
    assert _mode(out) == 0o777 & ~user_umask
    for f in out.iterdir():
        assert _mode(f) == 0o666 & ~user_umask, f.name
    write_model_dir(tmp_path / "m", record)  # replacing it keeps the rule and leaves no .old/.tmp
    assert _mode(out) == 0o777 & ~user_umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_training_checkpoints_follow_the_umask(tmp_path: Path, user_umask: int) -> None:
    from speechssl.train.checkpoint import copy_checkpoint, save_checkpoint

    save_checkpoint({"model": {"w": torch.zeros(1)}}, tmp_path / "c.pt")
    copy_checkpoint(tmp_path / "c.pt", tmp_path / "d.pt")
    assert _mode(tmp_path / "c.pt") == _mode(tmp_path / "d.pt") == 0o666 & ~user_umask


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_remove_stale_rules(tmp_path: Path) -> None:
    own = temp_name_prefix(tmp_path / "t.bin")
    dead = own.replace(f"~{os.getpid()}~", f"~{_dead_pid()}~")
    other_host = own.replace(own.split("~")[1], "elsewhere")
    (tmp_path / f"{dead}a.tmp").write_text("debris")
    (tmp_path / f"{dead}b.old").mkdir()
    (tmp_path / f"{own}c.tmp").write_text("in progress")          # this very process
    (tmp_path / f"{other_host}d.tmp").write_text("young, owner unknown")
    (tmp_path / ".t.bin.abcd1234.tmp").write_text("young, unstamped")
    old = tmp_path / ".t.bin.efgh5678.tmp"
    old.write_text("old, unstamped")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    (tmp_path / ".t.bin").write_text("a user's hidden file")
    (tmp_path / ".other.txt.zzzz9999.tmp.keep").write_text("not a temp name")
    removed = remove_stale(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f"{dead}a.tmp", f"{dead}b.old", old.name])
    assert _names(tmp_path) == sorted([f"{own}c.tmp", f"{other_host}d.tmp", ".t.bin.abcd1234.tmp", ".t.bin",
                                       ".other.txt.zzzz9999.tmp.keep"])
    # the caller owns the directory alone: anything not of a live local owner goes
    remove_stale(tmp_path, unowned_age_s=0)
    assert _names(tmp_path) == sorted([f"{own}c.tmp", ".t.bin", ".other.txt.zzzz9999.tmp.keep"])
    assert remove_stale(tmp_path / "missing") == []


def test_writes_clean_up_after_killed_writers_of_the_same_target(tmp_path: Path) -> None:
    dead = _dead_pid()
    for target in ("a.json", "b.json"):
        prefix = temp_name_prefix(tmp_path / target).replace(f"~{os.getpid()}~", f"~{dead}~")
        (tmp_path / f"{prefix}x.tmp").write_text("half")
    with atomic_open(tmp_path / "a.json") as f:
        f.write("{}")
    names = _names(tmp_path)
    assert "a.json" in names and not any(n.startswith(".a.json.") for n in names)
    assert any(n.startswith(".b.json.") for n in names)  # another target's: left to its own writer
    temp_dir_beside(tmp_path / "b.json")
    assert not any(n.startswith(".b.json.") and n.endswith("x.tmp") for n in _names(tmp_path))


def test_sigkilled_writer_leaves_debris_that_the_next_write_removes(tmp_path: Path) -> None:
    code = ("import os, signal, sys\n"
            "from speechssl.atomic import atomic_open\n"
            "with atomic_open(sys.argv[1], 'wb') as f:\n"
            "    f.write(b'x' * 1000); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")
    target = tmp_path / "out.bin"
    proc = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, timeout=60)
    assert proc.returncode == -9
    assert len(list(tmp_path.glob(".out.bin.*.tmp"))) == 1 and not target.exists()
    with atomic_open(target, "wb") as f:
        f.write(b"done")
    assert _names(tmp_path) == ["out.bin"] and target.read_bytes() == b"done"
