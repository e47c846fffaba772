"""A batch-coupled (contrastive) task on 2 gloo ranks x B items updates exactly like 1 process on 2B items."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from speechssl.train import Trainer
from tests.train.conftest import REPO, subprocess_env
from tests.train.coupled_task import CoupledTask, groups, run_updates, trainer_config


def test_two_ranks_gather_negatives_like_one_process_on_all_items(tmp_path):
    out = tmp_path / "two.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tests.train.coupled_task", "--exp-dir", str(tmp_path / "two"), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = torch.load(out, weights_only=True)

    one_trainer = Trainer(CoupledTask(), trainer_config(), tmp_path / "one")
    init = {k: v.clone() for k, v in one_trainer.model.lin.state_dict().items()}
    one = run_updates(one_trainer, 0, 1)

    assert two["coupled"] and not one_trainer.task.gathering
    for u in range(2):  # update 1: 2 x 4 items vs 8; update 2 (update_freq=2): unequal second batches
        s1, s2 = one["stats"][u], two["stats"][u]
        assert s2["sample_size"] == s1["sample_size"] == (8 if u == 0 else 16)
        assert s2["loss"] == pytest.approx(s1["loss"], rel=1e-6)
        assert s2["gnorm"] == pytest.approx(s1["gnorm"], rel=1e-5)  # the normalisation is right
        for k, v in one["params"][u].items():
            torch.testing.assert_close(two["params"][u][k], v, rtol=1e-5, atol=1e-6)
    assert not torch.equal(one["params"][1]["weight"], init["weight"])
    # validation uses each rank's own batch: the same numbers as one process, whatever the ranks' counts (2, 1)
    assert two["valid"]["loss"] == pytest.approx(one["valid"]["loss"], rel=1e-6)

    # the comparison is sensitive: local negatives only (each rank's batch on its own) update differently
    local = Trainer(CoupledTask(), trainer_config(), tmp_path / "local")
    halves = [g for r in range(2) for g in groups(r, 2)[0]]  # update 1 as two separate batches
    stats = local._step(halves, epoch=1)
    assert stats["loss"] != pytest.approx(one["stats"][0]["loss"], rel=1e-3)

    # the frozen teacher is neither optimised nor broadcast by DDP: each rank keeps its own weights
    t0, t1 = two["teachers"]
    assert not torch.equal(t0, t1)
    assert torch.equal(t0, one_trainer.model.teacher.weight)
    assert two["ddp_ignores"] == ["teacher.bias", "teacher.weight"]


def test_batch_coupled_task_logs_what_accumulation_means(tmp_path, speechssl_logs):
    cfg = trainer_config()
    cfg.update_freq = 3
    Trainer(CoupledTask(), cfg, tmp_path)
    text = speechssl_logs.text
    assert "batch-coupled task" in text and "update_freq=3 accumulates 3 such losses" in text
    assert "does not enlarge the set of negatives" in text
