"""A killed or refused run never costs good output: resume from the newest complete checkpoint,
validate before writing, no repeated metrics, no debris left behind.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from speechssl.atomic import temp_name_prefix
from speechssl.train import PretrainContext, Trainer
from speechssl.train import checkpoint as ckpt
from speechssl.train.progress import TrainingLog
from tests.train.conftest import REPO, subprocess_env
from tests.train.corrupt import flip_bit_in_tensor
from tests.train.test_trainer import tiny_cfg
from tests.train.tiny_task import TinyModelConfig, TinyTask, TinyTaskConfig

CFG = dict(max_updates=6, save_every_updates=2, keep_last=-1, log_every_updates=1, validate_every_updates=3)

# SIGKILL itself half-way through copying checkpoint_4.pt to checkpoint_last.pt
_KILLED_WHILE_WRITING_LAST = textwrap.dedent("""
    import os, signal, sys
    from speechssl.atomic import atomic_open
    from speechssl.train import Trainer, checkpoint as ckpt
    from tests.train.test_resume_safety import CFG
    from tests.train.test_trainer import tiny_cfg
    from tests.train.tiny_task import TinyTask, TinyTaskConfig
    copies = []
    copy = ckpt.copy_checkpoint
    def dying_copy(src, dst):
        copies.append(dst)
        if len(copies) == 2:
            data = open(src, "rb").read()
            with atomic_open(dst, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        copy(src, dst)
    ckpt.copy_checkpoint = dying_copy
    Trainer(TinyTask(TinyTaskConfig(data=sys.argv[1])), tiny_cfg(**CFG), sys.argv[2]).fit()
""")


def _records(exp: Path) -> list[dict]:
    return [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _trainer(data: Path, exp: Path, *, hidden: int | None = None, **kw) -> Trainer:
    ctx = PretrainContext("tiny-mfp-test", TinyModelConfig(hidden=hidden)) if hidden else None
    return Trainer(TinyTask(TinyTaskConfig(data=str(data)), ctx), tiny_cfg(**{**CFG, **kw}), exp)


def test_sigkill_while_writing_last_resumes_from_newest_complete(tiny_data, tmp_path, speechssl_logs) -> None:
    reference = tmp_path / "ref"
    _trainer(tiny_data, reference).fit()
    ref_losses = {r["update"]: r["loss"] for r in _records(reference) if r["split"] == "train"}

    exp = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", _KILLED_WHILE_WRITING_LAST, str(tiny_data), str(exp)], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [n for n, _ in ckpt.numbered_checkpoints(exp)] == [2, 4]
    assert ckpt.load_checkpoint(exp / ckpt.LAST)["num_updates"] == 2   # the copy of 4 never landed
    debris = list(exp.glob(".checkpoint_last.pt.*.tmp"))
    assert len(debris) == 1
    assert max(r["update"] for r in _records(exp)) == 4

    trainer = _trainer(tiny_data, exp)
    trainer.fit()
    messages = [r.getMessage() for r in speechssl_logs.records]
    assert any("is at update 2 but checkpoint_4.pt (update 4) is newer" in m and "resuming from checkpoint_4.pt" in m
               for m in messages)
    assert any("removed" in m and debris[0].name in m for m in messages)
    assert not debris[0].exists() and not list(exp.glob(".*.tmp"))
    records = _records(exp)
    train = [r["update"] for r in records if r["split"] == "train"]
    assert train == [1, 2, 3, 4, 5, 6]                                   # none repeated, none lost
    assert [r["update"] for r in records if r["split"] != "train"] == [3, 6]
    assert {r["update"]: r["loss"] for r in records if r["split"] == "train"} == ref_losses  # bit-exact
    assert trainer.num_updates == 6


def test_corrupted_last_falls_back_to_newest_intact_numbered(tiny_data, tmp_path, speechssl_logs) -> None:
    exp = tmp_path / "exp"
    _trainer(tiny_data, exp, max_updates=4).fit()
    state = ckpt.load_checkpoint(exp / ckpt.LAST)
    name, weight = next((k, v) for k, v in state["model"].items() if v.numel() > 16)
    flip_bit_in_tensor(exp / ckpt.LAST, name, weight)
    flip_bit_in_tensor(exp / "checkpoint_4.pt", name, weight)   # the same update's copy is bad too
    trainer = _trainer(tiny_data, exp, max_updates=4)
    trainer.fit()
    messages = [r.getMessage() for r in speechssl_logs.records]
    assert any("not resuming from checkpoint_4.pt" in m and f"'model/{name}'" in m for m in messages)
    assert any(f"checkpoint_last.pt: tensor 'model/{name}'" in m and "resuming from checkpoint_2.pt (update 2)" in m
               for m in messages)
    assert [r["update"] for r in _records(exp) if r["split"] == "train"] == [1, 2, 3, 4]


def test_missing_last_resumes_from_numbered(tiny_data, tmp_path, speechssl_logs) -> None:
    exp = tmp_path / "exp"
    _trainer(tiny_data, exp, max_updates=4).fit()
    (exp / ckpt.LAST).unlink()
    trainer = _trainer(tiny_data, exp, max_updates=6)
    trainer.fit()
    assert any("no " in r.getMessage() and "resuming from checkpoint_4.pt" in r.getMessage()
               for r in speechssl_logs.records)
    assert [r["update"] for r in _records(exp) if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_refused_resume_leaves_config_yaml_and_metrics(tiny_data, tmp_path) -> None:
    exp = tmp_path / "exp"
    _trainer(tiny_data, exp, max_updates=2).fit()
    config, metrics = (exp / "config.yaml").read_bytes(), (exp / "metrics.jsonl").read_bytes()
    refused = _trainer(tiny_data, exp, hidden=64, max_updates=4)   # checkpoint has hidden=32
    with pytest.raises(RuntimeError, match="size mismatch"):
        refused.fit()
    assert (exp / "config.yaml").read_bytes() == config
    assert yaml.safe_load(config)["trainer"]["max_updates"] == 2
    assert (exp / "metrics.jsonl").read_bytes() == metrics


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_trainer_start_removes_debris_of_dead_writers_only(tiny_data, tmp_path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    own = temp_name_prefix(exp / "checkpoint_last.pt")             # .checkpoint_last.pt.~host~pid~
    dead = own.replace(f"~{os.getpid()}~", f"~{_dead_pid()}~")
    (exp / f"{dead}abc123.tmp").write_bytes(b"half a checkpoint")
    (exp / ".checkpoint_8.pt.k2j3h4g5.tmp").write_bytes(b"left by an older speechssl")   # unstamped
    staged = exp / f"{dead}zz9.tmp"
    staged.mkdir()
    (staged / "x").write_text("a staging dir")
    alive = exp / f"{own}live.tmp"            # this process: in progress, kept
    alive.write_bytes(b"being written")
    (exp / ".hidden_user_file").write_text("not ours")
    _trainer(tiny_data, exp, max_updates=2).fit()
    assert sorted(p.name for p in exp.glob(".*")) == sorted([alive.name, ".hidden_user_file"])


def test_rewind_drops_later_and_torn_records(tmp_path: Path) -> None:
    lines = [{"split": "train", "update": u, "loss": 1.0 / u} for u in range(1, 6)]
    lines.insert(3, {"split": "valid", "update": 3, "loss": 0.5})
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"split": "train", "upd'
    (tmp_path / "metrics.jsonl").write_text(text)
    log = TrainingLog(tmp_path, enabled=True, tensorboard=False, progress_bar=False)
    log.open()
    try:
        assert log.rewind(3) == 3          # updates 4, 5 and the torn line
        log.update({"update": 4, "epoch": 1, "loss": 9.0, "lr": 0.1, "sample_size": 1.0}, log_now=False)
    finally:
        log.close()
    got = _records(tmp_path)
    assert [(r["split"], r["update"]) for r in got] == [("train", 1), ("train", 2), ("train", 3), ("valid", 3),
                                                        ("train", 4)]
    assert got[-1]["loss"] == 9.0


def test_fresh_run_over_a_killed_run_without_checkpoint_starts_metrics_afresh(tiny_data, tmp_path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "metrics.jsonl").write_text(json.dumps({"split": "train", "update": 1, "loss": 123.0}) + "\n")
    _trainer(tiny_data, exp, max_updates=2).fit()
    assert [r["update"] for r in _records(exp) if r["split"] == "train"] == [1, 2]
    assert all(r["loss"] != 123.0 for r in _records(exp))

