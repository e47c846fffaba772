"""Pretraining contract, for every registered method on its smallest preset and its own example data.

``Method.example(dir)`` writes a tiny training set and returns the task config; the Task is
built the one documented way, ``TaskCls(cfg, PretrainContext(method, model, seed))``, and
trained by the unchanged :class:`speechssl.train.Trainer` (CPU, fp32, constant learning rate,
no validation). A method without an example (or without a pretraining task) fails here: every
method must give the suite something to train.

* the loss falls: the loss per unit on a fixed batch (the first items of the training set,
  the same dropout and masking RNG stream before and after) is lower after a few updates;
* kill and resume: ``N`` updates straight give exactly the per-update losses, learning rates and
  final weights of a run stopped after ``KILL_AT`` updates (mid-epoch) and continued by a new
  Task and Trainer from its checkpoint (data position, optimizer, RNG states).

Only methods with a pretraining task are trained (a method without one, like wav2vec2, gets
the upstream checks of ``test_upstream.py`` only); one with a task but no ``example`` fails.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from speechssl.registry import Method, get_method
from speechssl.train import Trainer
from speechssl.train.config import ScheduleConfig, TrainerConfig
from speechssl.train.task import PretrainContext, Task
from tests.contract.conftest import method_names

SEED = 0
FALL_UPDATES = 4  # updates of the loss-falls run
RESUME_UPDATES = 3  # updates of the resume runs, 2 items per batch: the kill falls mid-epoch,
KILL_AT = 1  # the resumed run finishes that epoch and starts the next
FIXED_BATCH = 4  # items of the fixed batch the loss is measured on


def _trainable() -> list[str]:
    return [name for name in method_names() if get_method(name).task_cls is not None]


def _method(name: str) -> Method:
    method = get_method(name)
    if method.example is None:
        pytest.fail(f"method {name!r} has no Method.example: give it `example(directory) -> task config` that "
                    f"writes a tiny training set (see speechssl/registry.py)", pytrace=False)
    return method


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``method name → task config`` of its example data, written once per module."""
    cache: dict[str, Any] = {}

    def get(method: Method) -> Any:
        if method.name not in cache:
            cfg = method.example(tmp_path_factory.mktemp(f"example-{method.name}"))
            assert isinstance(cfg, method.task_config_cls), (
                f"{method.name}: example returned {type(cfg).__name__}, not {method.task_config_cls.__name__}")
            cache[method.name] = cfg
        return copy.deepcopy(cache[method.name])

    return get  # type: ignore[return-value]


def _task(method: Method, task_cfg: Any) -> Task:
    model_cfg = method.preset(method.smallest_preset)
    return method.task_cls(task_cfg, PretrainContext(method=method.name, model=model_cfg, seed=SEED))


def _trainer_config(method: Method, updates: int, max_sentences: int | None = None) -> TrainerConfig:
    """The method's own trainer preset (learning rate, batch size) with a short, deterministic loop."""
    base = method.task_cls.trainer_preset(method.smallest_preset) or TrainerConfig()
    return dataclasses.replace(
        base, seed=SEED, max_sentences=max_sentences or base.max_sentences, max_updates=updates, max_epochs=0, device="cpu", precision="fp32",
        schedule=ScheduleConfig(name="constant"), valid_split=None, validate_every_updates=0,
        validate_every_epochs=0, save_every_updates=0, save_every_epochs=0, keep_last=-1,
        log_every_updates=1, progress_bar=False, tensorboard=False, num_workers=0, scan_oom_batches=0,
        resume=True)


def _train_records(exp_dir: Path) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for line in (exp_dir / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec.get("split") == "train":
                out[rec["update"]] = rec
    return out


def _fixed_batch_loss(task: Task, model: torch.nn.Module, batch: dict[str, Any]) -> float:
    """Loss per unit of ``batch``, in training mode (masks as in training) from a fixed RNG stream."""
    model = copy.deepcopy(model)  # training-mode forwards may touch buffers; leave the real one alone
    model.train()
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(1234)
        loss, size, _ = task.loss(model, batch)
    assert size > 0, "the fixed batch has sample_size 0"
    return float(loss) / float(size)


@pytest.mark.parametrize("name", _trainable())
def test_tiny_pretraining_loss_falls(name: str, examples: Any, tmp_path: Path) -> None:
    method = _method(name)
    task = _task(method, examples(method))
    trainer = Trainer(task, _trainer_config(method, FALL_UPDATES), tmp_path / "exp")
    data = trainer.train_data
    data.set_epoch(1)
    batch = task.collate([data[i] for i in range(min(FIXED_BATCH, len(data)))])
    before = _fixed_batch_loss(task, trainer.model, batch)
    trainer.fit()
    after = _fixed_batch_loss(task, trainer.model, batch)
    records = _train_records(tmp_path / "exp")
    assert sorted(records) == list(range(1, FALL_UPDATES + 1)), f"logged updates {sorted(records)}"
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records.values())
    assert after < before, (f"{name}-{method.smallest_preset}: loss on a fixed batch went {before:.4f} -> {after:.4f} "
                            f"in {FALL_UPDATES} updates (training losses {[round(records[u]['loss'], 4) for u in sorted(records)]})")


@pytest.mark.parametrize("name", _trainable())
def test_kill_and_resume_gives_the_same_losses(name: str, examples: Any, tmp_path: Path) -> None:
    method = _method(name)
    task_cfg = examples(method)

    def trainer(updates: int, exp: str) -> Trainer:
        return Trainer(_task(method, copy.deepcopy(task_cfg)), _trainer_config(method, updates, max_sentences=2),
                       tmp_path / exp)

    straight = trainer(RESUME_UPDATES, "a")
    straight.fit()
    trainer(KILL_AT, "b").fit()
    resumed = trainer(RESUME_UPDATES, "b")
    resumed.fit()
    assert "resumed from" in (tmp_path / "b" / "train.log").read_text(), "the second run did not resume"
    ref, got = _train_records(tmp_path / "a"), _train_records(tmp_path / "b")
    updates = list(range(1, RESUME_UPDATES + 1))
    assert sorted(ref) == updates and sorted(got) == updates, (sorted(ref), sorted(got))
    for key in ("loss", "lr", "sample_size"):
        assert [got[u][key] for u in updates] == [ref[u][key] for u in updates], (
            f"{name}: {key} after kill + resume {[got[u][key] for u in updates]} != straight {[ref[u][key] for u in updates]}")
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{name}: weight {key} differs after kill + resume"
