"""SimCLR: the loss is NT-Xent of the two views' projections (formula written out), seeded views, representations,
projection heads, G-SimCLR pseudo-labels (k-means files, same-label negatives dropped), config errors."""
from __future__ import annotations

import dataclasses
import math
import shutil

import pytest
import torch

from speechssl.cluster.kmeans import fit_kmeans
from speechssl.data.image import ImageDataset
from speechssl.nn.losses import nt_xent
from speechssl.train.task import PretrainContext
from speechssl.upstream.simclr import METHOD, SimCLRModel, SimCLRTask, SimCLRTaskConfig
from speechssl.upstream.simclr.config import tiny, tiny_vit
from speechssl.upstream.simclr.pseudo_labels import pooled_image_features, write_pseudo_labels
from speechssl.upstream.simclr.task import PSEUDO_KEY


@pytest.fixture(scope="module")
def task_cfg(tmp_path_factory):
    return METHOD.example(tmp_path_factory.mktemp("simclr-example"))


def _task(cfg: SimCLRTaskConfig, model=None) -> SimCLRTask:
    return SimCLRTask(cfg, PretrainContext(method="simclr", model=model or tiny(), seed=0))


def _nt_xent_loop(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """SimCLR's loss (eq. 1), summed over the 2B views, float64."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n = z.shape[0]
    total = 0.0
    for i in range(n):
        j = (i + n // 2) % n
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n) if k != i)
        total -= math.log(math.exp(float(z[i] @ z[j]) / t) / denom)
    return total


def test_loss_is_nt_xent_of_the_two_views(task_cfg):
    cfg = dataclasses.replace(task_cfg, temperature=0.2)
    task = _task(cfg)
    torch.manual_seed(0)
    model = task.build_model().train()
    ds = task.dataset("train")
    batch = task.collate([ds[i] for i in range(6)])
    assert len(batch["views"]) == 2 and batch["views"][0].shape == (6, 3, 32, 32)
    with torch.random.fork_rng():
        loss, size, logs = task.loss(model, batch)
    z, h = model(batch["views"])  # same BN batch, same statistics
    assert z.shape == (2, 6, 64) and h.shape == (2, 6, 128) and size == 12
    assert float(loss.detach()) == pytest.approx(_nt_xent_loop(z[0].detach(), z[1].detach(), 0.2), rel=1e-5)
    assert logs["nt_xent"] == pytest.approx(float(loss.detach()))
    assert 0 <= logs["accuracy"] <= 12
    assert task.batch_coupled


def test_views_are_seeded_by_seed_epoch_and_index(task_cfg):
    task = _task(task_cfg)
    ds = task.dataset("train")
    a, b = ds[3], ds[3]
    assert all(torch.equal(x, y) for x, y in zip(a["views"], b["views"]))
    assert not torch.equal(a["views"][0], a["views"][1])
    ds.set_epoch(2)
    assert not torch.equal(ds[3]["views"][0], a["views"][0])
    other = _task(dataclasses.replace(task_cfg, seed=4)).dataset("train")
    assert not torch.equal(other[3]["views"][0], a["views"][0])
    valid = task.dataset("valid")[0]  # validation needs two views for its loss as well
    assert len(valid["views"]) == 2 and float(valid["views"][0].min()) >= 0 and float(valid["views"][0].max()) <= 1


def test_representation_is_the_pooled_last_state():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    res = SimCLRModel(tiny()).eval()
    with torch.no_grad():
        torch.testing.assert_close(res.represent(x), res(x)["last_hidden_state"].mean(1))
    vit = SimCLRModel(tiny_vit()).eval()
    with torch.no_grad():
        out = vit(x)
        assert vit.prefix_tokens == 1 and out["last_hidden_state"].shape == (2, 65, 64) and vit.patch_grid == (8, 8)
        torch.testing.assert_close(vit.represent(x), out["last_hidden_state"][:, 0])
    mean_cfg = tiny_vit()
    mean_cfg.vit.pool = "mean"
    vm = SimCLRModel(mean_cfg).eval()
    with torch.no_grad():
        out = vm(x)
        assert vm.prefix_tokens == 0 and out["last_hidden_state"].shape == (2, 64, 64)
        torch.testing.assert_close(vm.represent(x), out["last_hidden_state"].mean(1))


def test_vit_backbone_trains_through_the_task(task_cfg):
    task = _task(task_cfg, tiny_vit())
    torch.manual_seed(0)
    model = task.build_model()
    ds = task.dataset("train")
    loss, size, _ = task.loss(model, task.collate([ds[i] for i in range(4)]))
    loss.backward()
    assert size == 8 and model.upstream.backbone.cls_token.grad is not None
    assert task.no_weight_decay(model) == {"upstream.backbone.cls_token"}


def test_pseudo_labels_are_kmeans_of_pooled_features(task_cfg, tmp_path):
    data = tmp_path / "scenes"
    shutil.copytree(task_cfg.data, data)
    torch.manual_seed(0)
    upstream = SimCLRModel(tiny()).eval()
    written = write_pseudo_labels(upstream, data, ("train", "valid"), clusters=4, seed=0)
    assert sorted(written) == ["train", "valid"]
    rows = (data / "train.tsv").read_text().splitlines()[1:]
    labels = [int(v) for v in (data / "train.pseudo").read_text().split()]
    assert len(labels) == len(rows) and set(labels) <= set(range(4))
    dict_lines = (data / "dict.pseudo.txt").read_text().splitlines()
    assert [line.split()[0] for line in dict_lines] == ["0", "1", "2", "3"]
    assert [int(line.split()[1]) for line in dict_lines] == [labels.count(k) for k in range(4)]
    # the same k-means, fitted here on the same (L2-normalised) features, gives the same labels
    plain = ImageDataset(data / "train.tsv", size=32, augment=False, crop_fraction=1.0)
    pooled = pooled_image_features(upstream, plain, batch_size=7)
    with torch.no_grad():  # the ResNet's token mean is its global average pool
        ref = upstream.represent(torch.stack([plain[i]["image"] for i in range(len(plain))]))
    torch.testing.assert_close(pooled, ref, atol=1e-5, rtol=1e-5)
    feats = torch.nn.functional.normalize(pooled, dim=1)
    assert feats.shape == (len(rows), 128)
    assert fit_kmeans(feats, 4, seed=0).predict(feats).tolist() == labels

    # G-SimCLR: the batch carries the labels and the loss drops same-label negatives
    cfg = dataclasses.replace(task_cfg, data=str(data), negatives="pseudo_label")
    task = _task(cfg)
    model = task.build_model().train()
    gds = task.dataset("train")
    batch = task.collate([gds[i] for i in range(8)])
    assert batch[PSEUDO_KEY].tolist() == labels[:8]
    with torch.random.fork_rng():
        loss, size, _ = task.loss(model, batch)
    z, _ = model(batch["views"])
    ref = nt_xent(z[0], z[1], cfg.temperature, labels=batch[PSEUDO_KEY])
    torch.testing.assert_close(loss, ref.loss)
    # 8 images in 4 clusters share labels: fewer negatives, a lower loss
    assert float(loss.detach()) < float(nt_xent(z[0], z[1], cfg.temperature).loss.detach())


def test_config_errors(task_cfg, tmp_path):
    with pytest.raises(ValueError, match="task.data is empty"):
        _task(SimCLRTaskConfig())
    with pytest.raises(ValueError, match="task.temperature"):
        _task(dataclasses.replace(task_cfg, temperature=0.0))
    with pytest.raises(ValueError, match="task: grey_prob"):
        _task(dataclasses.replace(task_cfg, grey_prob=2.0))
    with pytest.raises(ValueError, match="task.negatives"):
        _task(dataclasses.replace(task_cfg, negatives="some"))
    bad = tiny_vit()
    bad.vit.patch = 5
    with pytest.raises(ValueError, match=r"model.image_size \(32\) must be a multiple of model.vit.patch \(5\)"):
        _task(task_cfg, bad)
    with pytest.raises(ValueError, match="model.resnet.widths"):
        _task(task_cfg, dataclasses.replace(tiny(), resnet=dataclasses.replace(tiny().resnet, depths=(1, 1))))
    with pytest.raises(FileNotFoundError, match="nosplit.tsv"):
        _task(task_cfg).dataset("nosplit")
    with pytest.raises(FileNotFoundError, match=r"train.nolabels not found: task.negatives=pseudo_label"):
        _task(dataclasses.replace(task_cfg, negatives="pseudo_label", pseudo_labels="nolabels")).dataset("train")
    with pytest.raises(ValueError, match="clusters must be >= 2"):
        write_pseudo_labels(SimCLRModel(tiny()), tmp_path, clusters=1)


def test_batchnorm_upstreams_have_a_model_digest():
    """The downstream runner hashes every upstream (``-u random:simclr``): BN's 0-dim counters included."""
    from speechssl.fingerprint import model_sha256

    torch.manual_seed(0)
    a, b = SimCLRModel(tiny()), SimCLRModel(tiny())
    b.load_state_dict(a.state_dict())
    assert model_sha256(a) == model_sha256(b)
    b.backbone.stem[1].num_batches_tracked += 1
    assert model_sha256(a) != model_sha256(b)


def test_pseudo_label_command_line(task_cfg, tmp_path, capsys):
    from speechssl import hub
    from speechssl.upstream.simclr.pseudo_labels import main

    data = tmp_path / "scenes"
    shutil.copytree(task_cfg.data, data)
    torch.manual_seed(0)
    model_dir = hub.save(SimCLRModel(tiny()).eval(), tmp_path / "model")
    assert main(["-u", str(model_dir), "--data", str(data), "--clusters", "3", "--splits", "train", "--ext", "km3"]) == 0
    assert len((data / "train.km3").read_text().split()) == 96 and not (data / "valid.km3").exists()
    assert len((data / "dict.km3.txt").read_text().splitlines()) == 3
    with pytest.raises(SystemExit) as exc:
        main(["-u", str(model_dir), "--data", str(tmp_path / "nothing"), "--clusters", "3"])
    assert exc.value.code == 2 and "manifest not found" in capsys.readouterr().err
