"""SlotCon: overlapping seeded views, the loss as SlotCon composes it (slot contrast against a loop reference),
the teacher centre, the EMA teacher, one step lowering the loss (ViT and ResNet), slot masks and their mIoU,
config errors."""
from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from speechssl import hub
from speechssl.cluster.segmentation import cluster_confusion
from speechssl.corpus.image import read_mask
from speechssl.data.augment import box_intersection, overlapping_crop_box, random_resized_crop_box
from speechssl.data.image import ImageDataset
from speechssl.data.manifest import read_manifest
from speechssl.nn.ema import cosine_momentum
from speechssl.nn.semantic_grouping import grouping_loss
from speechssl.train.task import PretrainContext
from speechssl.upstream.slotcon import METHOD, SlotConModel, SlotConTask, SlotConTaskConfig
from speechssl.upstream.slotcon.config import tiny, tiny_resnet
from speechssl.upstream.slotcon.slot_masks import load_slotcon, main, slot_mask_confusion


@pytest.fixture(scope="module")
def task_cfg(tmp_path_factory):
    return METHOD.example(tmp_path_factory.mktemp("slotcon-example"))


def _task(cfg: SlotConTaskConfig, model=None) -> SlotConTask:
    return SlotConTask(cfg, PretrainContext(method="slotcon", model=model or tiny(), seed=0))


def _batch(task: SlotConTask, n: int = 8):
    ds = task.dataset("train")
    ds.set_epoch(1)
    return task.collate([ds[i] for i in range(n)])


def _train_mode(model):
    model.train()
    model.teacher.eval()  # as the Trainer keeps a frozen module
    return model


def test_overlapping_crop_box_overlaps_more_often():
    constraint = (0, 0, 8, 8)  # a corner of a 32 x 32 image
    hits = plain = 0
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        box = overlapping_crop_box(32, 32, (0.08, 0.3), (3 / 4, 4 / 3), g, constraint, min_overlap=0.01)
        hits += box_intersection(box, constraint) >= 0.01 * box[2] * box[3] * 0.9
        plain += box_intersection(random_resized_crop_box(32, 32, (0.08, 0.3), (3 / 4, 4 / 3), g), constraint) > 0
    assert hits >= 150 and hits > plain + 50, (hits, plain)


def test_views_overlap_and_are_seeded(task_cfg):
    task = _task(task_cfg)
    ds = task.dataset("train")
    ds.set_epoch(3)
    a, b = ds[5], ds[5]
    assert all(torch.equal(x, y) for x, y in zip(a["views"], b["views"])) and torch.equal(a["crops"], b["crops"])
    overlapping = 0
    for i in range(len(ds)):
        c = ds[i]["crops"]
        assert c.shape == (2, 8)
        overlapping += box_intersection(tuple(int(v) for v in c[0, :4]), tuple(int(v) for v in c[1, :4])) > 0
    assert overlapping >= 0.95 * len(ds)


def _slot_contrast_loop(pred, queries, t_slots, t_active, tau):
    """SlotCon's ctr_loss_filtered written out: per query, CE over the active teacher slots, times 2 tau."""
    B, K, _ = t_slots.shape
    keys = [(b, k) for b in range(B) for k in range(K) if t_active[b, k]]
    qs = [(b, k) for b in range(B) for k in range(K) if queries[b, k]]
    total = 0.0
    for row, (b, k) in enumerate(qs):
        q = F.normalize(pred[row].double(), dim=0)
        logits = [float(q @ F.normalize(t_slots[bb, kk].double(), dim=0)) / tau for bb, kk in keys]
        pos = keys.index((b, k))
        total -= logits[pos] - math.log(sum(math.exp(v) for v in logits))
    return total / len(qs) * 2 * tau


def test_loss_is_slotcon_composition_and_center_moves(task_cfg):
    cfg = dataclasses.replace(task_cfg, group_loss_weight=0.3)
    task = _task(cfg)
    torch.manual_seed(0)
    model = _train_mode(task.build_model())
    model.center.copy_(torch.linspace(-0.1, 0.1, model.center.numel()))
    center0 = model.center.clone()
    batch = _batch(task)
    with torch.random.fork_rng():
        loss, size, logs = task.loss(model, batch)
    ref = copy.deepcopy(model)
    ref.center.copy_(center0)
    with torch.no_grad():
        out = ref(batch["views"], batch["crops"])  # same weights and BN batches: the same outputs
    assert size == 8
    g = 0.0
    for d in range(2):
        q, t = out["aligned_student"][d], out["aligned_teacher"][1 - d]
        K = q.shape[1]
        g += float(grouping_loss(q.permute(0, 2, 3, 1).reshape(-1, K), t.permute(0, 2, 3, 1).reshape(-1, K), center0,
                                 0.1, 0.07))
    c = sum(_slot_contrast_loop(out["predictions"][d], out["queries"][d], out["teacher_slots"][1 - d],
                                out["teacher_active"][1 - d], 0.2) for d in range(2))
    assert float(loss.detach()) / size == pytest.approx(0.3 * g + 0.7 * c, rel=1e-4)
    assert logs["grouping"] / size == pytest.approx(g, rel=1e-4) and logs["contrast"] / size == pytest.approx(c, rel=1e-4)
    # the centre: 0.9 c + 0.1 * mean teacher score over every pixel of both views
    mean = torch.cat(out["teacher_scores"]).mean(dim=(0, 2, 3))
    torch.testing.assert_close(model.center, center0 * 0.9 + mean * 0.1, atol=1e-6, rtol=1e-5)
    # validation (eval mode) leaves the centre alone
    before = model.center.clone()
    model.eval()
    with torch.no_grad():
        task.loss(model, batch)
    assert torch.equal(model.center, before)
    # the queries are the slots some pixel picks in the student's view d and the teacher's other view
    for d in range(2):
        assert out["predictions"][d].shape[0] == int(out["queries"][d].sum()) > 0


def test_teacher_is_an_ema_of_the_student(task_cfg):
    task = _task(dataclasses.replace(task_cfg, momentum_updates=10, teacher_momentum=0.9))
    torch.manual_seed(0)
    model = task.build_model()
    s, t = model.upstream.state_dict(), model.teacher.state_dict()
    assert all(torch.equal(s[k], t[k]) for k in s)
    assert task.frozen_modules(model) == {"teacher": None}
    with torch.no_grad():
        for p in model.upstream.parameters():
            p.add_(torch.randn_like(p))
    t0 = {k: v.clone() for k, v in model.teacher.named_parameters()}
    task.on_update(model, 4)
    m = cosine_momentum(0.9, 4, 10)
    assert 0.9 < m < 1
    student = dict(model.upstream.named_parameters())
    for k, p in model.teacher.named_parameters():
        assert torch.equal(p, t0[k] * m + student[k].detach() * (1 - m)), k
    t1 = {k: v.clone() for k, v in model.teacher.named_parameters()}
    task.on_update(model, 10)  # the end of the ramp: momentum 1, the teacher stays
    assert all(torch.equal(p, t1[k]) for k, p in model.teacher.named_parameters())


@pytest.mark.parametrize("preset", [tiny, tiny_resnet], ids=["vit", "resnet"])
def test_one_step_lowers_the_loss(task_cfg, preset):
    task = _task(task_cfg, preset())
    torch.manual_seed(0)
    model = _train_mode(task.build_model())
    batch = _batch(task, 16)
    params = [p for n, p in model.named_parameters() if not n.startswith("teacher.")]
    opt = torch.optim.Adam(params, lr=1e-3)

    def measure():
        m = copy.deepcopy(model)
        with torch.no_grad(), torch.random.fork_rng():
            l, n, _ = task.loss(m, batch)
        return float(l) / n

    before = measure()
    loss, n, _ = task.loss(model, batch)
    opt.zero_grad()
    (loss / n).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.upstream.prototypes.weight.grad.abs().sum() > 0 and model.predictor.net[0].weight.grad is not None
    opt.step()
    task.on_update(model, 1)
    after = measure()
    assert after < before, (before, after)


def test_slot_masks_and_their_miou(task_cfg, tmp_path):
    torch.manual_seed(0)
    model = SlotConModel(tiny()).eval()
    scenes = task_cfg.data
    conf, classes = slot_mask_confusion(model, scenes, "valid")
    assert classes[0] == "background" or len(classes) == 7
    # independently: per image, the argmax prototype of each patch repeated over its 4 x 4 pixels
    manifest, masks = read_manifest(f"{scenes}/valid.tsv"), read_manifest(f"{scenes}/valid.sem.tsv")
    images = ImageDataset(manifest, size=32, augment=False, crop_fraction=1.0)
    ref = torch.zeros_like(conf)
    for i in range(len(manifest)):
        with torch.no_grad():
            z = model.project(images[i]["image"][None])[0]  # (D', 8, 8)
            cos = F.normalize(model.prototypes.weight, dim=1) @ F.normalize(z.reshape(z.shape[0], -1), dim=0)
        patch = cos.argmax(0).reshape(8, 8)
        pixels = patch.repeat_interleave(4, 0).repeat_interleave(4, 1)
        ref += cluster_confusion(pixels, read_mask(masks.root / masks.paths[i]), 16, len(classes))
    assert torch.equal(conf, ref) and int(conf.sum()) == len(manifest) * 32 * 32
    path = hub.save(model, tmp_path / "model")
    out = tmp_path / "slots.json"
    assert main(["-u", str(path), "--data", scenes, "--split", "valid", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["num_prototypes"] == 16 and res["pixels"] == int(conf.sum())
    assert 0 <= res["hungarian"]["miou"] <= res["majority"]["pixel_accuracy"] <= 1
    assert res["hungarian"]["clusters_matched"] == min(16, len(classes))
    with pytest.raises(ValueError, match="training checkpoint"):
        load_slotcon(path, "teacher")


def test_teacher_slot_masks_from_a_checkpoint(task_cfg, tmp_path):
    from speechssl.train import Trainer
    from speechssl.train.config import TrainerConfig

    task = _task(task_cfg)
    cfg = TrainerConfig(max_updates=1, max_tokens=8, device="cpu", precision="fp32", valid_split=None,
                        validate_every_updates=0, validate_every_epochs=0, save_every_updates=1, save_every_epochs=0,
                        progress_bar=False, tensorboard=False, num_workers=0, scan_oom_batches=0)
    trainer = Trainer(task, cfg, tmp_path / "exp")
    trainer.fit()
    ckpt = tmp_path / "exp" / "checkpoint_last.pt"
    student, teacher = load_slotcon(ckpt), load_slotcon(ckpt, "teacher")
    for k, v in trainer.model.teacher.state_dict().items():
        assert torch.equal(teacher.state_dict()[k], v), k
    for k, v in trainer.model.upstream.state_dict().items():
        assert torch.equal(student.state_dict()[k], v), k
    assert not torch.equal(student.prototypes.weight, teacher.prototypes.weight)


@pytest.mark.parametrize("field,value,match", [
    ("teacher_temperature", 0.0, "task.teacher_temperature"),
    ("group_loss_weight", 1.5, "task.group_loss_weight"),
    ("momentum_updates", 0, "task.momentum_updates"),
    ("blur_prob", (0.5,), "task.blur_prob"),
])
def test_task_config_errors_name_the_field(task_cfg, field, value, match):
    with pytest.raises(ValueError, match=match):
        _task(dataclasses.replace(task_cfg, **{field: value}))


def test_model_config_errors_name_the_field():
    with pytest.raises(ValueError, match="model.num_prototypes"):
        dataclasses.replace(tiny(), num_prototypes=1).validate()
    with pytest.raises(ValueError, match="model.image_size"):
        dataclasses.replace(tiny(), image_size=30).validate()
