"""Trainer hooks: parameter groups, layer-wise lr decay, frozen modules, on_update, multi-source data."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
import torch
from torch import nn

from speechssl._hub.checkpoint import read_training_checkpoint
from speechssl.data.multisource import MultiSourceBatchSampler, MultiSourceDataset
from speechssl.train import PretrainContext, Task, Trainer, TrainerConfig
from speechssl.train.config import OptimConfig, ScheduleConfig
from speechssl.train.frozen import tensor_sha256
from speechssl.train.optim import param_groups
from tests.train.items import RandomItems
from tests.train.items import stack as _stack
from tests.train.tiny_task import TinyTask, TinyTaskConfig


def _cfg(**kw: Any) -> TrainerConfig:
    base = dict(max_tokens=8, max_updates=4, log_every_updates=1, tensorboard=False, progress_bar=False,
                valid_split=None, optim=OptimConfig(lr=0.1, weight_decay=0.5, clip_norm=0.0),
                schedule=ScheduleConfig(name="constant"))
    base.update(kw)
    return TrainerConfig(**base)


def _Items(n: int, seed: int) -> RandomItems:
    return RandomItems(n, seed, x=(4,), y=(4,))


class _Blocks(nn.Module):
    """embed -> 3 residual blocks (Linear + LayerNorm) -> head; plus a flagged no-decay matrix."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(dim, dim)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim)) for _ in range(3))
        self.head = nn.Linear(dim, dim)
        self.rot = nn.Parameter(torch.eye(dim))
        self.rot._no_weight_decay = True  # type: ignore[attr-defined]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) @ self.rot
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


class _BlocksTask(Task):
    num_layers = 3

    def __init__(self, cfg: Any = None, ctx: PretrainContext | None = None) -> None:
        self.cfg, self.ctx = cfg, ctx

    def build_model(self) -> nn.Module:
        return _Blocks()

    def dataset(self, split: str) -> RandomItems:
        return _Items(16, seed=0)

    def collate(self, items):
        return _stack(items)

    def loss(self, model, batch):
        return (model(batch["x"]) - batch["y"]).pow(2).sum(), len(batch["x"]), {}

    def layer_id(self, name: str) -> int | None:
        if name.startswith(("embed.", "rot")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return 4 if name.startswith("head.") else None


def _names(model: nn.Module, group: dict[str, Any]) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_default_is_one_group_that_decays_everything():
    model = _Blocks()
    groups = param_groups(model.named_parameters(), OptimConfig(weight_decay=0.01))
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.01 and groups[0]["lr_scale"] == 1.0
    assert [id(p) for p in groups[0]["params"]] == [id(p) for p in model.parameters()]  # today's order


def test_no_decay_on_norms_biases_and_task_names_matches_torch_adamw(tmp_path):
    task = _BlocksTask()
    trainer = Trainer(task, _cfg(optim=OptimConfig(lr=0.1, weight_decay=0.5, clip_norm=0.0, decay_norm_bias=False)),
                      tmp_path)
    model = trainer.model
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert set(groups) == {"decay", "no_decay"}
    assert _names(model, groups["decay"]) == {"embed.weight", "head.weight"} | {
        f"blocks.{i}.0.weight" for i in range(3)}
    assert _names(model, groups["no_decay"]) == {"embed.bias", "head.bias", "rot"} | {
        f"blocks.{i}.{j}.{w}" for i in range(3) for j, w in ((0, "bias"), (1, "weight"), (1, "bias"))}
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 0.5
    # oracle: torch's AdamW with hand-made groups, same start, same batch
    ref = copy.deepcopy(model)
    decay = [p for n, p in ref.named_parameters() if n.endswith("weight") and p.ndim == 2]
    rest = [p for n, p in ref.named_parameters() if not (n.endswith("weight") and p.ndim == 2)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.5}, {"params": rest, "weight_decay": 0.0}],
                            lr=0.1, betas=(0.9, 0.98), eps=1e-6)
    batch = _stack([task.dataset("train")[i] for i in range(8)])
    for _ in range(2):
        trainer._step([batch], epoch=1)
        opt.zero_grad()
        ((ref(batch["x"]) - batch["y"]).pow(2).sum() / 8).backward()
        opt.step()
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=lambda m: f"{n}: {m}")


def test_layer_decay_scales_each_groups_lr(tmp_path):
    optim = OptimConfig(lr=0.1, clip_norm=0.0, decay_norm_bias=False, layer_decay=0.5)
    trainer = Trainer(_BlocksTask(), _cfg(optim=optim, schedule=ScheduleConfig(name="linear", warmup_updates=2)),
                      tmp_path)
    by_name = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert set(by_name) == {f"layer{i}/{d}" for i in range(5) for d in ("decay", "no_decay")}
    for i in range(5):
        for d in ("decay", "no_decay"):
            assert by_name[f"layer{i}/{d}"]["lr_scale"] == 0.5 ** (4 - i)
    assert _names(trainer.model, by_name["layer0/no_decay"]) == {"embed.bias", "rot"}
    lr = trainer.schedule.apply(trainer.optimizer, 1)  # warmup: half the peak
    assert lr == pytest.approx(0.05)
    for g in trainer.optimizer.param_groups:
        assert g["lr"] == pytest.approx(0.05 * g["lr_scale"])
    with pytest.raises(ValueError, match="layer_decay needs the task's num_layers"):
        Trainer(_NoLayers(), _cfg(optim=optim), tmp_path / "none")
    with pytest.raises(ValueError, match=r"optim.layer_decay must lie in \(0, 1\]"):
        Trainer(_BlocksTask(), _cfg(optim=OptimConfig(layer_decay=1.5)), tmp_path / "bad")


class _NoLayers(_BlocksTask):
    num_layers = 0


class _TinyLayers(TinyTask):
    """The tiny masked predictor with two layers: conv (1), out (2); mask_emb and norm are layer 0."""

    num_layers = 2

    def layer_id(self, name: str) -> int | None:
        return {"mask_emb": 0, "norm": 0, "conv": 1, "out": 2}[name.split(".")[0]]


def test_param_groups_resume_bit_exact_and_refuse_other_groups(tiny_data, tmp_path):
    optim = OptimConfig(lr=3e-3, decay_norm_bias=False, layer_decay=0.7)
    base = dict(max_tokens=24000, valid_split=None, save_every_updates=2, optim=optim,
                schedule=ScheduleConfig(name="linear", warmup_updates=2, total_updates=5))
    task_cfg = TinyTaskConfig(data=str(tiny_data))
    whole = Trainer(_TinyLayers(task_cfg), _cfg(max_updates=5, **base), tmp_path / "whole")
    whole.fit()
    Trainer(_TinyLayers(task_cfg), _cfg(max_updates=2, **base), tmp_path / "split").fit()
    resumed = Trainer(_TinyLayers(task_cfg), _cfg(max_updates=5, **base), tmp_path / "split")
    resumed.fit()
    assert resumed.num_updates == 5 and "resumed from" in (tmp_path / "split" / "train.log").read_text()
    for k, v in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    sa, sb = whole.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for i, st in sa["state"].items():
        assert all(torch.equal(st[k], sb["state"][i][k]) for k in st)
    with pytest.raises(ValueError, match="parameter groups .* changed from"):
        Trainer(_TinyLayers(task_cfg), _cfg(max_updates=6, **{**base, "optim": OptimConfig(lr=3e-3)}),
                tmp_path / "split").fit()


# -- frozen modules ---------------------------------------------------------------------------
@dataclasses.dataclass
class _StudentConfig:
    dim: int = 4


def _teacher(version: int) -> nn.Module:
    """A 'pretrained' teacher: its weights are a function of its reference (here: a version)."""
    torch.manual_seed(1000 + version)
    return nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4))


class _Distill(nn.Module):
    def __init__(self, teacher_version: int) -> None:
        super().__init__()
        self.student = nn.Linear(4, 4)
        self.teacher = _teacher(teacher_version)
        self.ema = nn.Linear(4, 4)
        self.ema.load_state_dict(self.student.state_dict())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.student(x), self.teacher(x), self.ema(x)


class _DistillTask(Task):
    """Regress the frozen teacher's output (plus the EMA's, to use it) from the student."""

    method = "tiny-distill"

    def __init__(self, teacher_version: int = 1) -> None:
        self.version = teacher_version
        self.updates_seen: list[tuple[int, bool]] = []
        self._at_loss: torch.Tensor | None = None

    def build_model(self) -> nn.Module:
        return _Distill(self.version)

    def frozen_modules(self, model: nn.Module) -> dict[str, str | None]:
        return {"teacher": f"test:teacher-v{self.version}", "ema": None}

    def dataset(self, split: str) -> RandomItems:
        return _Items(16, seed=0)

    def collate(self, items):
        return _stack(items)

    def loss(self, model, batch):
        s, t, e = model(batch["x"])
        self.teacher_training = model.teacher.training
        self._at_loss = model.student.weight.detach().clone()
        return (s - t.detach()).pow(2).sum() + 0.0 * e.sum(), len(batch["x"]), {}

    def on_update(self, model: nn.Module, num_updates: int) -> None:
        # runs after the optimizer step: the student has moved since the loss
        moved = not torch.equal(self._at_loss, model.student.weight)
        self.updates_seen.append((num_updates, moved))
        with torch.no_grad():
            for pe, ps in zip(model.ema.parameters(), model.student.parameters()):
                pe.mul_(0.9).add_(ps, alpha=0.1)

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.student

    def upstream_config(self) -> Any:
        return _StudentConfig()


def test_frozen_modules_are_not_optimised_and_stored_by_reference(tmp_path):
    task = _DistillTask()
    trainer = Trainer(task, _cfg(max_updates=3, save_every_updates=1), tmp_path)
    teacher0 = copy.deepcopy(trainer.model.teacher.state_dict())
    ema0 = copy.deepcopy(trainer.model.ema.state_dict())
    trainer.fit()
    model = trainer.model
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert not any(p.requires_grad for p in model.ema.parameters())
    in_opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in model.student.parameters()}
    assert task.teacher_training is False and model.student.training  # dropout/BN of the teacher stay off
    assert all(torch.equal(v, teacher0[k]) for k, v in model.teacher.state_dict().items())  # BN stats too
    assert not torch.equal(model.ema.weight, ema0["weight"])  # on_update moved the EMA
    assert task.updates_seen == [(1, True), (2, True), (3, True)]
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert not any(k.startswith("teacher.") for k in state["model"])
    assert {k for k in state["model"] if k.startswith("ema.")} == {"ema.weight", "ema.bias"}
    assert torch.equal(state["model"]["ema.weight"], model.ema.weight)  # saved after the last on_update
    assert state["frozen"] == {"teacher": {"reference": "test:teacher-v1", "sha256": tensor_sha256(model.teacher)}}
    # hub.load's reader still finds the upstream (the student) in such a checkpoint
    record = read_training_checkpoint(tmp_path / "checkpoint_last.pt", state)
    assert set(record.state_dict) == {"weight", "bias"}
    assert torch.equal(record.state_dict["weight"], model.student.weight)


def test_resume_rebuilds_frozen_modules_and_checks_their_hash(tmp_path):
    whole = Trainer(_DistillTask(), _cfg(max_updates=4), tmp_path / "whole")
    whole.fit()
    Trainer(_DistillTask(), _cfg(max_updates=2), tmp_path / "split").fit()
    resumed = Trainer(_DistillTask(), _cfg(max_updates=4), tmp_path / "split")
    resumed.fit()
    assert resumed.task.updates_seen == [(3, True), (4, True)]  # it resumed, then trained updates 3 and 4
    for k, v in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    with pytest.raises(ValueError) as err:
        Trainer(_DistillTask(teacher_version=2), _cfg(max_updates=6), tmp_path / "split").fit()
    msg = str(err.value)
    assert "frozen module 'teacher' rebuilt from 'test:teacher-v2' has sha256" in msg
    assert "recorded" in msg and "\n" not in msg


def test_tensor_sha256_sees_values_dtypes_and_names():
    a = nn.Linear(3, 2)
    b = copy.deepcopy(a)
    assert tensor_sha256(a) == tensor_sha256(b)
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert tensor_sha256(a) != tensor_sha256(b)
    assert tensor_sha256(a) != tensor_sha256(copy.deepcopy(a).double())
    renamed = nn.Sequential(copy.deepcopy(a))
    assert tensor_sha256(a) != tensor_sha256(renamed)


def test_frozen_module_errors(tmp_path):
    class Bad(_DistillTask):
        def __init__(self, spec):
            super().__init__()
            self.spec = spec

        def frozen_modules(self, model):
            return self.spec

    with pytest.raises(ValueError, match="'tutor' is not a submodule"):
        Trainer(Bad({"tutor": "x"}), _cfg(), tmp_path)
    with pytest.raises(ValueError, match="'teacher.0' lies inside 'teacher'"):
        Trainer(Bad({"teacher": "x", "teacher.0": None}), _cfg(), tmp_path)
    with pytest.raises(ValueError, match="the empty name would freeze the whole model"):
        Trainer(Bad({"": None}), _cfg(), tmp_path)


# -- multi-source data --------------------------------------------------------------------------
class _TwoSources(Task):
    def __init__(self) -> None:
        self.sources_seen: list[str] = []
        self.ds = MultiSourceDataset({"a": _Items(12, seed=0), "b": _Items(6, seed=1)}, {"a": 1.0, "b": 2.0})
        self._collate = self.ds.collater(a=_stack, b=_stack)

    def build_model(self) -> nn.Module:
        return nn.Linear(4, 4)

    def dataset(self, split: str) -> MultiSourceDataset:
        return self.ds

    def collate(self, items):
        return self._collate(items)

    def loss(self, model, batch):
        self.sources_seen.append(batch["source"])
        return (model(batch["x"]) - batch["y"]).pow(2).sum(), len(batch["x"]), {}


def test_multi_source_dataset_gets_one_source_per_batch(tmp_path):
    task = _TwoSources()
    trainer = Trainer(task, _cfg(max_tokens=3, max_updates=0, max_epochs=1), tmp_path)
    assert isinstance(trainer.train_sampler, MultiSourceBatchSampler)
    trainer.fit()
    # a: 12 items -> 4 batches of 3, b: 6 items x proportion 2 -> 4 batches
    assert sorted(task.sources_seen) == ["a"] * 4 + ["b"] * 4
    assert task.sources_seen == trainer.train_sampler.sources(1)


def test_train_reexports_the_data_layers_sized_dataset_and_context_is_frozen():
    import speechssl.data.base
    import speechssl.train
    import speechssl.train.task

    assert speechssl.train.SizedDataset is speechssl.train.task.SizedDataset is speechssl.data.base.SizedDataset
    ctx = PretrainContext(method="hubert", model={"dim": 4})
    assert ctx.seed == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.seed = 1  # type: ignore[misc]
