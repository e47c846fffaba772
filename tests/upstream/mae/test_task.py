"""MAE task: seeded mask noise, the loss as MAE's formula, parameter hooks, config errors."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from speechssl.train.task import PretrainContext
from speechssl.upstream.mae import METHOD, MAETask, MAETaskConfig
from speechssl.upstream.mae.config import tiny


@pytest.fixture(scope="module")
def task_cfg(tmp_path_factory):
    return METHOD.example(tmp_path_factory.mktemp("mae-example"))


def _task(cfg: MAETaskConfig) -> MAETask:
    return MAETask(cfg, PretrainContext(method="mae", model=tiny(), seed=0))


def test_items_carry_noise_from_seed_epoch_and_index(task_cfg):
    task = _task(task_cfg)
    ds = task.dataset("train")
    a, b = ds[3], ds[3]
    assert a["noise"].shape == (64,) and torch.equal(a["noise"], b["noise"]) and torch.equal(a["image"], b["image"])
    assert not torch.equal(ds[4]["noise"], a["noise"])
    ds.set_epoch(2)
    assert not torch.equal(ds[3]["noise"], a["noise"])
    other = _task(dataclasses.replace(task_cfg, seed=5)).dataset("train")
    assert not torch.equal(other[3]["noise"], a["noise"])
    valid = task.dataset("valid")[0]
    assert valid["image"].shape == (3, 32, 32)


def test_loss_is_maes_mean_times_the_masked_patches(task_cfg):
    task = _task(task_cfg)
    torch.manual_seed(0)
    model = task.build_model().eval()
    ds = task.dataset("train")
    batch = task.collate([ds[i] for i in range(4)])
    loss, size, logs = task.loss(model, batch)
    out = model(batch["image"], batch["noise"])
    assert size == 4 * (64 - 16) and bool((out.mask.sum(1) == 48).all())
    per_patch = ((out.pred - out.target) ** 2).mean(-1)
    mae_loss = (per_patch * out.mask).sum() / out.mask.sum()  # MAE's forward_loss
    torch.testing.assert_close(loss / size, mae_loss, atol=1e-6, rtol=1e-6)
    assert logs["mse"] == pytest.approx(float(loss.detach()))
    # norm_pix_loss targets: mean 0, unbiased std ~1 per patch
    assert float(out.target.mean(-1).abs().max()) < 1e-5


def test_parameter_hooks(task_cfg):
    task = _task(task_cfg)
    model = task.build_model()
    names = dict(model.named_parameters())
    assert task.no_weight_decay(model) == {"upstream.vit.cls_token", "mask_token"}
    assert task.layer_id("upstream.vit.patch_embed.proj.weight") == 0
    assert task.layer_id("upstream.vit.encoder.layers.1.fc1.weight") == 2
    assert task.layer_id("decoder_pred.weight") == task.num_layers + 1 == 3
    assert all(task.layer_id(n) is not None for n in names)


def test_config_errors(task_cfg):
    with pytest.raises(ValueError, match="task.data is empty"):
        _task(MAETaskConfig())
    with pytest.raises(ValueError, match="task.mask_ratio"):
        _task(dataclasses.replace(task_cfg, mask_ratio=1.0))
    with pytest.raises(ValueError, match="model.image_size"):
        bad = dataclasses.replace(tiny(), image_size=30)
        MAETask(task_cfg, PretrainContext(method="mae", model=bad, seed=0))
    with pytest.raises(FileNotFoundError, match="nosplit.tsv"):
        _task(task_cfg).dataset("nosplit")
