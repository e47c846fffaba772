"""The image segmentation probe: mIoU against sklearn and a hand count, pixel patches, cached vs
uncached features, the weighted layer sum on image tokens, and tiny end-to-end runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechssl.corpus.image import build_image_corpus
from speechssl.data.manifest import FormatError
from speechssl.downstream.cache import FeatureCache
from speechssl.downstream.image_features import confusion_matrix, pixel_patch_tokens, segmentation_scores
from speechssl.downstream.image_seg import TASK, ImageSeg, ImageSegConfig, PatchSegmentationHead
from speechssl.downstream.runner import prepare, resolve_configs, train
from speechssl.downstream.task import FeaturizerConfig, RunContext
from speechssl.downstream.upstreams import load_upstream
from speechssl.nn.vit import patchify


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_image_corpus(tmp_path_factory.mktemp("img"), "tiny", 0, digits=False)


def test_miou_matches_sklearn_and_a_hand_count():
    from sklearn.metrics import confusion_matrix as sk_confusion
    from sklearn.metrics import jaccard_score

    g = torch.Generator().manual_seed(0)
    ref = torch.randint(0, 4, (3, 9, 7), generator=g)  # class 4 of 5 never appears
    pred = torch.where(torch.rand(ref.shape, generator=g) < 0.6, ref, torch.randint(0, 4, ref.shape, generator=g))
    conf = confusion_matrix(pred, ref, 5)
    np.testing.assert_array_equal(conf.numpy(), sk_confusion(ref.flatten(), pred.flatten(), labels=range(5)))
    scores = segmentation_scores(conf, list("abcde"))
    iou = jaccard_score(ref.flatten(), pred.flatten(), labels=range(4), average=None)
    assert scores["miou"] == pytest.approx(float(iou.mean()), abs=1e-12)
    assert [scores[f"iou_{c}"] for c in "abcd"] == pytest.approx(list(iou), abs=1e-12)
    assert np.isnan(scores["iou_e"])
    assert scores["pixel_accuracy"] == pytest.approx(float((pred == ref).double().mean()), abs=1e-12)
    # by hand: ref [[0, 0], [1, 1]], pred [[0, 1], [1, 1]] -> IoU_0 = 1/2, IoU_1 = 2/3, accuracy 3/4
    hand = segmentation_scores(confusion_matrix(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 0], [1, 1]]), 2))
    assert hand["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2) and hand["pixel_accuracy"] == 0.75
    with pytest.raises(ValueError, match="reference ids"):
        confusion_matrix(torch.zeros(2, dtype=torch.long), torch.tensor([0, 3]), 3)


def test_pixel_patch_tokens_are_patchify_of_the_flat_pixels():
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    got = pixel_patch_tokens(images.reshape(2, 1, -1), (3, 8, 8), 4)
    torch.testing.assert_close(got, patchify(images, 4), rtol=0, atol=0)
    with pytest.raises(ValueError, match="divide"):
        pixel_patch_tokens(images.reshape(2, 1, -1), (3, 8, 8), 3)


def test_head_is_per_patch_linear_then_bilinear():
    head = PatchSegmentationHead(5, 3, (2, 2), (8, 8), prefix_tokens=1)
    x = torch.randn(2, 1 + 4, 5, generator=torch.Generator().manual_seed(2))
    logits = head(x)["logits"]
    assert logits.shape == (2, 3, 8, 8)
    per_patch = head.proj(x[:, 1:]).transpose(1, 2).reshape(2, 3, 2, 2)
    # bilinear, align_corners=False, 4x: output pixel i samples source coordinate (i + 0.5) / 4 - 0.5,
    # so pixel (2, 3) lies at (0.125, 0.375) between the four patches — one pixel computed by hand
    y, x = 0.125, 0.375
    want = ((1 - y) * (1 - x) * per_patch[..., 0, 0] + (1 - y) * x * per_patch[..., 0, 1]
            + y * (1 - x) * per_patch[..., 1, 0] + y * x * per_patch[..., 1, 1])
    torch.testing.assert_close(logits[..., 2, 3], want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits[..., 0, 0], per_patch[..., 0, 0], rtol=1e-5, atol=1e-6)  # border: clamped


def _task(corpus: Path, spec: str, tmp_path: Path, *, cache: bool, layer: int | None = None,
          subset: str = "roads") -> ImageSeg:
    up = load_upstream(spec, modality="image")
    ctx = RunContext(upstream=up, data_dir=corpus, featurizer=FeaturizerConfig(layer=layer),
                     cache=FeatureCache(tmp_path / "cache") if cache else None)
    return ImageSeg(ImageSegConfig(subset=subset), ctx)


def _first_batch_loss(task: ImageSeg) -> tuple[float, torch.nn.Module]:
    torch.manual_seed(0)
    model = task.build_model()
    ds = task.dataset("train")
    batch = task.collate([ds[i] for i in range(4)])
    loss, size, logs = task.loss(model, batch)
    assert size == 4 * 32 * 32
    return loss, model


def test_cached_and_uncached_features_give_the_same_loss_and_the_layer_weights_learn(corpus, tmp_path):
    cached, uncached = (_task(corpus, "random:mae@tiny", tmp_path, cache=c) for c in (True, False))
    loss_c, model_c = _first_batch_loss(cached)
    loss_u, _ = _first_batch_loss(uncached)
    assert float(loss_c.detach()) == pytest.approx(float(loss_u.detach()), rel=1e-5)
    torch.testing.assert_close(cached.train_moments()[0], uncached.train_moments()[0], rtol=1e-4, atol=1e-5)
    assert model_c.featurizer.weights is not None and model_c.featurizer.weights.shape == (3,)  # L + 1 states
    (loss_c / (4 * 32 * 32)).backward()
    assert float(model_c.featurizer.weights.grad.abs().sum()) > 0  # the weighted sum is learnable
    assert any((tmp_path / "cache").iterdir())
    one = _task(corpus, "random:mae@tiny", tmp_path, cache=True, layer=-1)  # one layer, from the all-layer cache
    loss_one, model_one = _first_batch_loss(one)
    assert model_one.featurizer.num_layers == 1 and one.layer_weights(model_one) == [0.0, 0.0, 1.0]


def test_masks_must_match_their_images(corpus, tmp_path):
    bad = tmp_path / "bad"
    (bad / "roads").mkdir(parents=True)
    for f in (corpus / "roads").iterdir():
        (bad / "roads" / f.name).symlink_to(f)
    (bad / "roads" / "train.sem.tsv").unlink()
    rows = (corpus / "roads" / "train.sem.tsv").read_text().splitlines()
    rows[1], rows[2] = rows[2], rows[1]
    (bad / "roads" / "train.sem.tsv").write_text("\n".join(rows) + "\n")
    task = _task(bad, "pixels", tmp_path, cache=False)
    with pytest.raises(FormatError, match=r"train\.sem\.tsv:2: mask road_train_00001\.sem\.png is not the mask"):
        task.split("train")


def _run(corpus: Path, tmp_path: Path, upstream: str, subset: str, updates: int) -> dict:
    run, tcfg, trainer, spec = resolve_configs(
        flags={"task": "image_seg", "upstream": upstream, "data": str(corpus)},
        overrides=[f"task.subset={subset}", f"trainer.max_updates={updates}", "trainer.validate_every_updates=50",
                   "trainer.save_every_updates=50", "trainer.progress_bar=false", "trainer.tensorboard=false"])
    return train(prepare(run, tcfg, trainer, spec, tmp_path / f"{upstream}-{subset}"))


def test_pixels_beat_chance_on_road_scenes_end_to_end(corpus, tmp_path):
    assert TASK.name == "image_seg" and TASK.metric == "miou" and TASK.modality == "image"
    res = _run(corpus, tmp_path, "pixels", "roads", 150)
    m = res["metrics"]
    assert m["miou"] > m["chance_miou"] + 0.05, m
    assert m["pixel_accuracy"] > m["chance_pixel_accuracy"], m
    assert res["metric"] == "miou" and res["value"] == m["miou"] and res["layer_weights"] == [1.0]
    assert res["scored"] == {"count": 8, "unit": "images"} and "miou" in res["valid_metrics"]
    saved = json.loads((tmp_path / "pixels-roads" / "result.json").read_text())
    assert saved["value"] == m["miou"]
    line = (tmp_path / "pixels-roads" / "predictions_test.tsv").read_text().splitlines()[0].split("\t")
    assert line[0] == "road_test_00000" and line[2].startswith("terrain:")


def test_random_init_backbone_on_object_masks(corpus, tmp_path):
    res = _run(corpus, tmp_path, "random:mae@tiny", "scenes", 20)
    weights = res["layer_weights"]
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0) and weights != [1 / 3] * 3
    assert set(res["metrics"]) >= {"miou", "pixel_accuracy", "chance_miou", "iou_background", "iou_star"}


def test_cnn_upstream_needs_a_layer_for_the_probe(corpus, tmp_path):
    """A ResNet's stages differ in width: a weighted sum is refused in one line before any work;
    with one layer chosen it runs."""
    with pytest.raises(ValueError, match=r"widths \[.*\].*-l -1"):
        _task(corpus, "random:simclr@tiny", tmp_path, cache=True)
    task = _task(corpus, "random:simclr@tiny", tmp_path, cache=True, layer=-1)
    assert task.build_model() is not None
