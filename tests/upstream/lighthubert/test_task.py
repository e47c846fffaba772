"""LightHuBERT distillation task: stage-2 subnet sampling, exact resume, the teacher kept by reference."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from speechssl import hub
from speechssl.nn.supernet import Subnet
from speechssl.train import Trainer
from speechssl.train.config import OptimConfig, ScheduleConfig, TrainerConfig
from speechssl.train.task import PretrainContext
from speechssl.upstream.lighthubert.config import parse_subnet, tiny
from speechssl.upstream.lighthubert.example import write_example
from speechssl.upstream.lighthubert.model import LightHubertModel
from speechssl.upstream.lighthubert.task import LightHubertTask


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return write_example(tmp_path_factory.mktemp("lighthubert-example"))


def _trainer(task: LightHubertTask, exp: Path, updates: int) -> Trainer:
    cfg = TrainerConfig(max_updates=updates, max_sentences=2, max_tokens=160_000, device="cpu", precision="fp32",
                        optim=OptimConfig(lr=1e-3), schedule=ScheduleConfig(name="constant"), valid_split=None,
                        save_every_updates=0, log_every_updates=1, progress_bar=False, tensorboard=False,
                        num_workers=0, scan_oom_batches=0, resume=True)
    return Trainer(task, cfg, exp)


def _records(exp: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["update"]: r for r in rows if r.get("split") == "train"}


def test_stage2_samples_a_subnet_per_update_and_resumes_exactly(example, tmp_path):
    cfg = dataclasses.replace(example, stage=2)

    def task() -> LightHubertTask:
        return LightHubertTask(dataclasses.replace(cfg), PretrainContext("lighthubert", tiny(), seed=0))

    straight = _trainer(task(), tmp_path / "a", 4)
    straight.fit()
    _trainer(task(), tmp_path / "b", 2).fit()
    resumed = _trainer(task(), tmp_path / "b", 4)
    resumed.fit()
    assert "resumed from" in (tmp_path / "b" / "train.log").read_text()
    a, b = _records(tmp_path / "a"), _records(tmp_path / "b")
    assert [a[u]["loss"] for u in range(1, 5)] == [b[u]["loss"] for u in range(1, 5)]
    assert straight.task.subnet == resumed.task.subnet
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    # the subnets differ between updates (uniform draws from the tiny space)
    t = task()
    seen = [t.subnet]
    for u in range(1, 8):
        t.on_update(None, u)
        seen.append(t.subnet)
    assert len(set(seen)) > 1 and all(t.space.contains(s) for s in seen)
    # the teacher is checkpointed by reference, not by weights
    ckpt = torch.load(next((tmp_path / "b").rglob("*.pt")), weights_only=True)
    assert not any(k.startswith("teacher.") for k in ckpt["model"]), "teacher weights in the checkpoint"
    assert ckpt["frozen"]["teacher"]["reference"] == cfg.teacher


def test_stage1_runs_the_largest_subnet_and_targets_clamp_to_the_teacher(example):
    task = LightHubertTask(example, PretrainContext("lighthubert", tiny(), seed=0))
    assert task.subnet == tiny().search_space.max()
    task.on_update(None, 1)
    assert task.subnet == tiny().search_space.max()
    model = task.build_model()
    assert model.target_layers == 4  # the tiny HuBERT teacher has 4 layers (< 8)
    assert task.frozen_modules(model) == {"teacher": example.teacher}


def test_subnet_upstream_via_config_survives_the_hub(tmp_path):
    config = tiny().with_subnet(parse_subnet("min", tiny()))
    model = LightHubertModel(config).eval()
    assert model.hidden_sizes == [64] * 3
    loaded = hub.load(hub.save(model, tmp_path / "m"))
    assert loaded.subnet == Subnet(64, (1, 1), (192, 192))
    wav = [torch.randn(6000)]
    with torch.no_grad():
        assert torch.equal(loaded(wav)["last_hidden_state"], model(wav)["last_hidden_state"])
    with pytest.raises(ValueError, match="subnet 'huge'"):
        parse_subnet("huge", tiny())
