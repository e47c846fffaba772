"""Unsupervised segmentation: the Hungarian-matched mIoU against brute force over every matching and a hand
count, true classes as clusters scoring 1, the segments against k-means' own assignment, and tiny
end-to-end runs through the runner (raw pixels, a random-init ResNet)."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechssl.cluster.segmentation import cluster_confusion, match_clusters, matched_segmentation_scores
from speechssl.corpus.image import build_image_corpus
from speechssl.downstream.image_features import confusion_matrix, segmentation_scores
from speechssl.downstream.image_seg_unsup import TASK, ImageSegUnsup, ImageSegUnsupConfig
from speechssl.downstream.runner import prepare, resolve_configs, train
from speechssl.downstream.task import FeaturizerConfig, RunContext
from speechssl.downstream.upstreams import load_upstream


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_image_corpus(tmp_path_factory.mktemp("img"), "tiny", 0, digits=False)


def _brute_force(seg: np.ndarray, ref: np.ndarray, k: int, c: int) -> tuple[int, float]:
    """The most matched pixels over every one-to-one cluster -> class map, and that map's mIoU
    (scored by segmentation_scores on the relabelled prediction, unmatched clusters as an extra class)."""
    best = (-1, float("nan"))
    for classes in itertools.permutations(range(c), min(k, c)):
        for clusters in itertools.permutations(range(k), min(k, c)):
            lut = np.full(k, c)  # c: "no class"
            lut[list(clusters)] = classes
            pred = lut[seg]
            matched = int((pred == ref).sum())
            if matched > best[0]:
                conf = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(ref), c + 1)
                conf[c, c] = 0  # the "no class" column is no class of the reference
                scores = segmentation_scores(conf[:, :], None)
                ious = [scores[f"iou_{i}"] for i in range(c)]
                best = (matched, float(np.nanmean(ious)))
    return best


def _scores(seg: np.ndarray, ref: np.ndarray, k: int, c: int, mapping: np.ndarray | None = None):
    """(scores, mapping, (K, C) counts) of the segmentation through speechssl.cluster.segmentation."""
    conf = cluster_confusion(torch.from_numpy(np.asarray(seg)), torch.from_numpy(np.asarray(ref)), k, c)
    used = match_clusters(conf) if mapping is None else np.asarray(mapping)
    return matched_segmentation_scores(conf, mapping=used), used, conf.numpy().T


@pytest.mark.parametrize("k,c", [(4, 4), (5, 4), (3, 4)])
def test_hungarian_miou_equals_brute_force_over_matchings(k, c):
    rng = np.random.default_rng(k * 10 + c)
    ref = rng.integers(0, c, size=(3, 7, 5))
    noise = rng.integers(0, k, size=ref.shape)
    perm = rng.permutation(max(k, c))[:c] % k
    seg = np.where(rng.random(ref.shape) < 0.55, perm[ref], noise)  # clusters that mostly follow the classes
    res, mapping, counts = _scores(seg, ref, k, c)
    matched, miou = _brute_force(seg, ref, k, c)
    assert sum(counts[i, m] for i, m in enumerate(mapping) if m >= 0) == matched
    assert res["miou"] == pytest.approx(miou, abs=1e-12)
    assert res["pixel_accuracy"] == pytest.approx(matched / ref.size, abs=1e-12)
    assert (mapping >= 0).sum() == min(k, c) and len(set(mapping[mapping >= 0])) == min(k, c)


def test_hungarian_miou_by_hand():
    seg = np.array([[0, 0], [1, 1]])
    ref = np.array([[1, 1], [0, 1]])
    # counts: cluster 0 holds 2 px of class 1; cluster 1 holds 1 px of class 0 and 1 of class 1 -> 0->1, 1->0
    # prediction [[1, 1], [0, 0]]: IoU_0 = 1/2, IoU_1 = 2/3, accuracy 3/4
    res, mapping, _ = _scores(seg, ref, 2, 2)
    assert mapping.tolist() == [1, 0]
    assert res["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2) and res["pixel_accuracy"] == 0.75
    # a given many-to-one map (both clusters -> class 1): IoU_0 = 0, IoU_1 = 3/4
    forced, _, _ = _scores(seg, ref, 2, 2, mapping=np.array([1, 1]))
    assert forced["miou"] == pytest.approx(3 / 8) and forced["pixel_accuracy"] == 0.75
    with pytest.raises(ValueError, match="cluster ids must be in"):
        _scores(np.array([2]), np.array([0]), 2, 2)
    with pytest.raises(ValueError, match="mapping must be"):
        _scores(seg, ref, 2, 2, mapping=np.array([2, 0]))


def test_clusters_that_are_the_classes_score_one():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 6, size=(4, 16, 16))
    relabel = np.array([4, 0, 5, 2, 7, 1])  # class c is cluster relabel[c]; clusters 3 and 6 stay empty
    res, mapping, _ = _scores(relabel[ref], ref, 8, 6)
    assert res["miou"] == 1.0 and res["pixel_accuracy"] == 1.0
    assert [int(mapping[relabel[c]]) for c in range(6)] == list(range(6))
    assert mapping[[3, 6]].tolist() == [-1, -1]


def _task(corpus: Path, spec: str, *, layer: int | None = None, **cfg) -> ImageSegUnsup:
    ctx = RunContext(upstream=load_upstream(spec, modality="image"), data_dir=corpus,
                     featurizer=FeaturizerConfig(layer=layer))
    return ImageSegUnsup(ImageSegUnsupConfig(**cfg), ctx)


def test_segments_are_the_nearest_centroids_of_the_tokens(corpus):
    # one-pixel patches: the patch grid is the mask's, so the bilinear upsampling is the identity and every
    # pixel's cluster must be k-means' own nearest-centroid assignment of its (prepared) token
    task = _task(corpus, "pixels", pixel_patch=1)
    km, mean, std = task.fit()
    seg = task.segment("test")
    tokens = task.patch_tokens("test")
    x = torch.nn.functional.normalize((tokens - mean) / std, dim=-1)
    assert seg.shape == (8, 32, 32)
    assert torch.equal(seg.reshape(8, -1), km.predict(x.reshape(-1, x.shape[-1])).reshape(8, -1))
    assert task.fit() is task.fit()  # memoised: valid and test share one clustering


def _run(corpus: Path, tmp_path: Path, upstream: str, *extra: str) -> dict:
    run, tcfg, trainer, spec = resolve_configs(
        flags={"task": "image_seg_unsup", "upstream": upstream, "data": str(corpus)},
        overrides=["task.subset=roads", "trainer.progress_bar=false", "trainer.tensorboard=false", *extra])
    return train(prepare(run, tcfg, trainer, spec, tmp_path / upstream.replace(":", "_")))


def test_pixels_end_to_end_on_road_scenes(corpus, tmp_path):
    assert TASK.name == "image_seg_unsup" and TASK.metric == "miou" and TASK.modality == "image"
    res = _run(corpus, tmp_path, "pixels")
    m = res["metrics"]
    assert res["metric"] == "miou" and res["value"] == m["miou"] and res["layer_weights"] == [1.0]
    assert m["clusters"] == 6 and set(m) >= {"iou_road", "iou_terrain", "miou_train_matching", "chance_miou"}
    assert 0 <= m["miou"] <= 1 and m["miou"] > m["chance_miou"], m
    assert res["scored"] == {"count": 8, "unit": "images"} and "miou" in res["valid_metrics"]
    saved = json.loads((tmp_path / "pixels" / "result.json").read_text())
    assert saved["value"] == m["miou"] and saved["task"] == "image_seg_unsup"
    line = (tmp_path / "pixels" / "predictions_test.tsv").read_text().splitlines()[0].split("\t")
    assert line[0] == "road_test_00000" and "terrain:" in line[2]
    again = _run(corpus, tmp_path / "again", "pixels")
    assert again["value"] == res["value"]  # k-means is seeded: the same segments twice


def test_a_cnn_upstream_is_clustered_on_its_last_stage(corpus, tmp_path):
    res = _run(corpus, tmp_path, "random:transinv@tiny", "task.clusters=8")
    assert res["layer_weights"] == [0.0, 0.0, 0.0, 0.0, 1.0] and res["metrics"]["clusters"] == 8
    two = _run(corpus, tmp_path / "l2", "random:transinv@tiny", "featurizer.layer=2")
    assert two["layer_weights"] == [0.0, 0.0, 1.0, 0.0, 0.0] and two["metrics"]["layer"] == 2
