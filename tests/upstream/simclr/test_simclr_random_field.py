"""SimCLR with random field augmentations: the default (``task.random_field=none``) keeps the views and
loss of the plain pipeline bit for bit; mild/strong apply the fields after the view's own draws."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

from speechssl.data.image_augment import MultiViewImageDataset, ViewAugment
from speechssl.train.task import PretrainContext
from speechssl.upstream.simclr import METHOD, SimCLRTask
from speechssl.upstream.simclr.config import tiny

# Recorded with the task before random fields existed (same example corpus, seed 0 model, items 0-5).
_GOLDEN_VIEWS_SHA256 = "1cbe5088fe1685de22b14f6642df2045e43d174ce25c1e267cb4b6683aa1bd5c"
_GOLDEN_LOSS = 25.992124557495117


@pytest.fixture(scope="module")
def task_cfg(tmp_path_factory):
    return METHOD.example(tmp_path_factory.mktemp("simclr-rf-example"))


def _task(cfg) -> SimCLRTask:
    return SimCLRTask(cfg, PretrainContext(method="simclr", model=tiny(), seed=0))


def _digest(views: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for v in views:
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()


def test_default_keeps_views_and_loss_unchanged(task_cfg):
    assert task_cfg.random_field == "none"
    task = _task(task_cfg)
    assert isinstance(task.view_augment, ViewAugment)
    torch.manual_seed(0)
    model = task.build_model().train()
    ds = task.dataset("train")
    batch = task.collate([ds[i] for i in range(6)])
    assert _digest(batch["views"]) == _GOLDEN_VIEWS_SHA256
    loss, size, _ = task.loss(model, batch)
    assert float(loss.detach()) == pytest.approx(_GOLDEN_LOSS, rel=1e-6) and size == 12
    # the same views as a dataset built from the plain view pipeline directly
    plain = MultiViewImageDataset(Path(task_cfg.data) / "train.tsv", view_augment=ViewAugment(size=32), views=2,
                                  seed=task_cfg.seed)
    assert all(torch.equal(a, b) for a, b in zip(plain[4]["views"], ds[4]["views"]))


@pytest.mark.parametrize("setting", ["mild", "strong"])
def test_fields_follow_the_view_pipeline(task_cfg, setting):
    base = _task(task_cfg).dataset("train")
    rf = _task(dataclasses.replace(task_cfg, random_field=setting)).dataset("train")
    changed = 0
    for i in range(8):
        a, b = base[i], rf[i]
        assert b["crops"].shape == (2, 10)
        # the first view draws its crop, flip and jitter before any field, so they are the plain
        # pipeline's; the second view's come after the first view's fields in the same generator
        assert torch.equal(a["crops"][0], b["crops"][0, :8])
        v0, v1, applied = a["views"][0], b["views"][0], float(b["crops"][0, 8:].sum())
        assert float(b["views"][1].min()) >= 0 and float(b["views"][1].max()) <= 1
        assert float(v1.min()) >= 0 and float(v1.max()) <= 1
        if applied == 0:
            assert torch.equal(v0, v1)
        else:
            changed += int(not torch.equal(v0, v1))
    assert changed > 0
    again = _task(dataclasses.replace(task_cfg, random_field=setting)).dataset("train")
    assert all(torch.equal(x, y) for x, y in zip(rf[2]["views"], again[2]["views"]))


def test_mild_views_train(task_cfg):
    task = _task(dataclasses.replace(task_cfg, random_field="mild"))
    torch.manual_seed(0)
    model = task.build_model().train()
    ds = task.dataset("train")
    loss, size, logs = task.loss(model, task.collate([ds[i] for i in range(6)]))
    assert torch.isfinite(loss) and size == 12 and logs["nt_xent"] > 0


def test_unknown_setting_is_an_error(task_cfg):
    with pytest.raises(ValueError, match="task.random_field must be one of none, mild, strong"):
        _task(dataclasses.replace(task_cfg, random_field="wild"))
