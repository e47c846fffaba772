from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from speechssl.config import to_dict
from speechssl.train import NonFiniteLossError, PretrainContext, Task, Trainer, TrainerConfig
from speechssl.train.checkpoint import numbered_checkpoints
from speechssl.train.config import OptimConfig, ScheduleConfig
from speechssl.train.device import move_to_device
from tests.train.conftest import train_records
from tests.train.items import RandomItems
from tests.train.tiny_task import TinyModelConfig, TinyTask, TinyTaskConfig


def tiny_cfg(**kw: Any) -> TrainerConfig:
    base = dict(max_tokens=24000, max_updates=6, log_every_updates=2, tensorboard=False, progress_bar=False,
                optim=OptimConfig(lr=3e-3), schedule=ScheduleConfig(name="constant"))
    base.update(kw)
    return TrainerConfig(**base)


def test_tiny_task_loss_drops(tiny_data, tmp_path):
    cfg = tiny_cfg(max_updates=0, max_epochs=4, schedule=ScheduleConfig(name="linear", warmup_updates=3),
                   tensorboard=True)
    trainer = Trainer(TinyTask(TinyTaskConfig(data=str(tiny_data))), cfg, tmp_path)
    final = trainer.fit()
    recs = train_records(tmp_path)
    n = len(recs)
    assert n == trainer.num_updates == 4 * trainer._updates_per_epoch()
    first = np.mean([recs[u]["loss"] for u in (1, 2, 3)])
    last = np.mean([recs[u]["loss"] for u in (n - 2, n - 1, n)])
    assert last < 0.6 * first
    valid = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "valid"]
    assert len(valid) == 4 and valid[-1]["loss"] < 0.6 * valid[0]["loss"] and final["loss"] == valid[-1]["loss"]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    log = (tmp_path / "train.log").read_text()
    assert "epoch 1 update 2/" in log and "valid on 'valid'" in log and "saved checkpoint_" in log


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _Items(n: int, seed: int) -> RandomItems:
    return RandomItems(n, seed, x=(4,), y=(3,))


class LinearTask(Task):
    """Least squares on random data; loss summed over items, sample_size = items."""

    def __init__(self, nan_always: bool = False) -> None:
        self.nan_always = nan_always
        self.dtypes: list[torch.dtype] = []

    def build_model(self) -> nn.Module:
        return _Linear()

    def dataset(self, split: str) -> RandomItems:
        return _Items(16, seed=0 if split == "train" else 1)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {k: torch.stack([it[k] for it in items]) for k in ("x", "y")}

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        out = model(batch["x"])
        self.dtypes.append(out.dtype)
        loss = (out.float() - batch["y"]).pow(2).sum()
        if self.nan_always:
            loss = loss + float("nan")
        return loss, len(batch["x"]), {"n": float(len(batch["x"]))}


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_accumulation_equals_doubled_batch(tmp_path):
    data = _Items(8, seed=3)
    task = LinearTask()
    part_a = task.collate([data[i] for i in range(3)])
    part_b = task.collate([data[i] for i in range(3, 8)])
    whole = task.collate([data[i] for i in range(8)])
    cfg = tiny_cfg(max_updates=2, optim=OptimConfig(lr=0.1, weight_decay=0.0, clip_norm=0.0), valid_split=None)
    accumulated = Trainer(task, dataclasses.replace(cfg, update_freq=2), tmp_path / "a")
    doubled = Trainer(task, cfg, tmp_path / "b")
    assert all(torch.equal(p, q) for p, q in zip(_params(accumulated.model), _params(doubled.model)))
    for _ in range(2):
        sa = accumulated._step([part_a, part_b], epoch=1)
        sb = doubled._step([whole], epoch=1)
        assert sa["loss"] == pytest.approx(sb["loss"], rel=1e-6) and sa["sample_size"] == sb["sample_size"] == 8
    for p, q in zip(_params(accumulated.model), _params(doubled.model)):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    # and the gradient really is the mean over all 8 items (sum / total), not a mean of means
    lin = _Linear()
    lin.load_state_dict(doubled.model.state_dict())
    ((lin(whole["x"]) - whole["y"]).pow(2).sum() / 8).backward()
    doubled.optimizer.zero_grad()
    doubled._step([part_a, part_b], epoch=1)  # re-run to inspect grads (AdamW keeps them after step)
    torch.testing.assert_close(doubled.model.lin.weight.grad, lin.lin.weight.grad, rtol=1e-5, atol=1e-6)


def test_nan_updates_are_skipped(tiny_data, tmp_path, speechssl_logs):
    task = TinyTask(TinyTaskConfig(data=str(tiny_data), nan_at_calls=(3,)))
    trainer = Trainer(task, tiny_cfg(max_updates=5), tmp_path)
    trainer.fit()
    assert trainer.num_updates == 5
    assert "update 3 skipped: non-finite loss" in speechssl_logs.text
    recs = train_records(tmp_path)
    assert sorted(recs) == [1, 2, 3, 4, 5] and all(np.isfinite(r["loss"]) for r in recs.values())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_nan_streak_stops_with_a_clear_error(tmp_path):
    task = LinearTask(nan_always=True)
    trainer = Trainer(task, tiny_cfg(max_updates=50, max_tokens=4, max_consecutive_nan=3), tmp_path)
    before = _params(trainer.model)
    with pytest.raises(NonFiniteLossError, match="3 updates in a row had a non-finite loss"):
        trainer.fit()
    assert len(task.dtypes) == 3 and trainer.num_updates == 0
    assert all(torch.equal(p, q) for p, q in zip(before, _params(trainer.model)))


def test_bf16_autocast_on_cpu(tiny_data, tmp_path):
    task = LinearTask()
    trainer = Trainer(task, tiny_cfg(max_updates=3, max_tokens=8, precision="bf16"), tmp_path / "lin")
    trainer.fit()
    assert task.dtypes and all(d == torch.bfloat16 for d in task.dtypes)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    tiny = Trainer(TinyTask(TinyTaskConfig(data=str(tiny_data))), tiny_cfg(max_updates=3, precision="bf16"),
                   tmp_path / "tiny")
    tiny.fit()
    assert all(np.isfinite(r["loss"]) for r in train_records(tmp_path / "tiny").values())
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Trainer(task, tiny_cfg(precision="fp16", device="cpu"), tmp_path / "fp16")


class _UpstreamTask(TinyTask):
    method = "tiny-mfp"

    def build_model(self) -> nn.Module:
        return nn.ModuleDict({"encoder": super().build_model()})

    def loss(self, model, batch):
        inner = model.module if hasattr(model, "module") else model
        return super().loss(lambda f, m: inner["encoder"](f, m), batch)

    def upstream(self, model: nn.Module) -> nn.Module:
        return model["encoder"]

    def upstream_config(self) -> Any:
        return self.model_cfg


def test_checkpoint_contents_and_pruning(tiny_data, tmp_path):
    cfg = tiny_cfg(max_updates=7, save_every_updates=2, keep_last=2, validate_every_updates=3)
    task = _UpstreamTask(TinyTaskConfig(data=str(tiny_data)), PretrainContext("tiny-mfp-test", TinyModelConfig(hidden=8)))
    tree = {"model": to_dict(task.model_cfg), "task": to_dict(task.cfg), "trainer": to_dict(cfg)}
    trainer = Trainer(task, cfg, tmp_path, config_tree=tree)
    trainer.fit()
    assert [n for n, _ in numbered_checkpoints(tmp_path)] == [6, 7]  # 2, 4 pruned; 7 is the final save
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert state["num_updates"] == 7 and state["config"] == tree
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "rng", "data", "task", "best", "upstream"}
    assert state["upstream"] == {"method": "tiny-mfp", "config": {"hidden": 8, "dropout": 0.0}, "prefix": "encoder."}
    assert set(state["rng"][0]) == {"python", "numpy", "torch"}
    assert state["task"]["updates"] == 7
    assert state["data"]["epoch"] >= 1 and state["data"]["world_size"] == 1
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(state["model"][k], v)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == tree
    best = torch.load(tmp_path / "checkpoint_best.pt", weights_only=True)
    assert best["best"] == trainer.best and best["num_updates"] in (3, 6, 7)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_rerun_of_a_finished_run_does_nothing(tiny_data, tmp_path):
    task_cfg = TinyTaskConfig(data=str(tiny_data))
    Trainer(TinyTask(task_cfg), tiny_cfg(max_updates=4), tmp_path).fit()
    again = Trainer(TinyTask(task_cfg), tiny_cfg(max_updates=4), tmp_path)
    again.fit()
    assert again.num_updates == 4 and len(train_records(tmp_path)) == 4
    longer = Trainer(TinyTask(task_cfg), tiny_cfg(max_updates=6), tmp_path)
    longer.fit()
    assert longer.num_updates == 6 and sorted(train_records(tmp_path)) == [1, 2, 3, 4, 5, 6]


def test_scan_pessimistic_batches_leaves_state_untouched(tiny_data, tmp_path):
    task_cfg = TinyTaskConfig(data=str(tiny_data), global_rng_mask=True)
    a = Trainer(TinyTask(task_cfg), tiny_cfg(max_updates=3), tmp_path / "a")
    a.fit()
    b = Trainer(TinyTask(task_cfg), tiny_cfg(max_updates=3, scan_oom_batches=2), tmp_path / "b")
    b.fit()
    assert [r["loss"] for r in train_records(tmp_path / "a").values()] == \
        [r["loss"] for r in train_records(tmp_path / "b").values()]


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="set trainer.max_updates or trainer.max_epochs"):
        Trainer(LinearTask(), TrainerConfig(), tmp_path)
    with pytest.raises(ValueError, match="update_freq"):
        Trainer(LinearTask(), tiny_cfg(update_freq=0), tmp_path)
    with pytest.raises(TypeError, match="config_tree must hold only plain values"):
        Trainer(LinearTask(), tiny_cfg(), tmp_path, config_tree={"trainer": tiny_cfg()})
    with pytest.raises(ValueError, match=r"best_metric='wer' is not among the validation results: loss, n"):
        Trainer(LinearTask(), tiny_cfg(max_tokens=8, best_metric="wer"), tmp_path).fit()


def test_move_to_device_recurses():
    batch = {"a": torch.ones(2), "b": [torch.zeros(1), ("x", torch.ones(1))], "c": 3, "d": None}
    moved = move_to_device(batch, torch.device("cpu"))
    assert moved["b"][1][0] == "x" and moved["c"] == 3 and moved["d"] is None
    assert torch.equal(moved["b"][1][1], torch.ones(1))


def test_worker_processes_load_the_same_batches(tiny_data, tmp_path):
    task_cfg = TinyTaskConfig(data=str(tiny_data))
    Trainer(TinyTask(task_cfg), tiny_cfg(max_updates=3), tmp_path / "w0").fit()
    Trainer(TinyTask(task_cfg), tiny_cfg(max_updates=3, num_workers=2), tmp_path / "w2").fit()
    assert [r["loss"] for r in train_records(tmp_path / "w0").values()] == \
        [r["loss"] for r in train_records(tmp_path / "w2").values()]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_gpu_training(tiny_data, tmp_path, precision):
    trainer = Trainer(TinyTask(TinyTaskConfig(data=str(tiny_data))),
                      tiny_cfg(max_updates=4, precision=precision, device="auto"), tmp_path)
    trainer.fit()
    assert next(trainer.model.parameters()).device.type == "cuda"
    recs = train_records(tmp_path)
    assert len(recs) == 4 and all(np.isfinite(r["loss"]) for r in recs.values())
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert "cuda" in state["rng"][0]
    assert bool(state["scaler"]) == (precision == "fp16")
    resumed = Trainer(TinyTask(TinyTaskConfig(data=str(tiny_data))),
                      tiny_cfg(max_updates=6, precision=precision, device="auto"), tmp_path)
    resumed.fit()
    assert resumed.num_updates == 6


def test_best_checkpoint_ties_go_to_the_lower_validation_loss(tmp_path, monkeypatch):
    """A saturating metric (accuracy reaching 1.0) keeps improving the checkpoint while the
    validation loss falls; a strictly worse loss at the same accuracy does not replace it."""
    script = iter([{"accuracy": 0.5, "loss": 2.0}, {"accuracy": 1.0, "loss": 1.0}, {"accuracy": 1.0, "loss": 0.5},
                   {"accuracy": 1.0, "loss": 0.7}, {"accuracy": 0.9, "loss": 0.1}])
    cfg = tiny_cfg(max_tokens=8, max_updates=5, validate_every_updates=1, save_every_updates=0,
                   best_metric="accuracy", maximize_best_metric=True)
    trainer = Trainer(LinearTask(), cfg, tmp_path)
    monkeypatch.setattr(trainer, "validate", lambda: next(script))
    trainer.fit()
    best = torch.load(tmp_path / "checkpoint_best.pt", weights_only=True)
    assert (best["num_updates"], best["best"], best["best_loss"]) == (3, 1.0, 0.5)
    assert (trainer.best, trainer.best_loss) == (1.0, 0.5)
