"""The image probe task and its shared helpers: pooling, k-NN against a loop, probes on the tiny image corpus."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speechssl.corpus.image import build_image_corpus
from speechssl.downstream.image_features import PixelConfig, PixelUpstream, knn_probe, linear_probe, pooled_features
from speechssl.downstream.image_probe import TASK, ImageProbe, ImageProbeConfig
from speechssl.downstream.task import RunContext
from speechssl.downstream.upstreams import LoadedUpstream, upstream_hash
from speechssl.nn.vit import VisionTransformer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_image_corpus(tmp_path_factory.mktemp("img"), "tiny", 0)


def _ctx(model, corpus: Path) -> RunContext:
    return RunContext(upstream=LoadedUpstream(model=model, name=model.method, hash=upstream_hash(model),
                                              method=model.method), data_dir=corpus)


class _TinyViT(VisionTransformer):
    method = "tiny-vit"

    def __init__(self) -> None:
        super().__init__(32, 8, 3, 16, 32, 1, 2)

    @property
    def hidden_sizes(self) -> list[int]:
        return [16, 16]


def test_pooled_features_are_means_of_patch_tokens_or_the_class_token():
    torch.manual_seed(0)
    model = _TinyViT().eval()
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    mean, cls = (pooled_features(model, [images[:3], images[3:]], [-1], pool)[0] for pool in ("mean", "cls"))
    with torch.no_grad():
        h = model(images)["hidden_states"][-1]
    torch.testing.assert_close(mean, h[:, 1:].mean(1), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cls, h[:, 0], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="class token"):
        pooled_features(PixelUpstream(), [images], [0], "cls")


def test_knn_matches_a_loop_and_linear_probe_separates():
    g = torch.Generator().manual_seed(2)
    x, xt = torch.randn(40, 6, generator=g), torch.randn(15, 6, generator=g)
    y = [int(v) for v in torch.randint(0, 3, (40,), generator=g)]
    got = knn_probe(x, y, xt, k=5)
    xn, tn = x / x.norm(dim=1, keepdim=True), xt / xt.norm(dim=1, keepdim=True)
    for i in range(15):
        nearest = torch.argsort(-(tn[i] @ xn.T), stable=True)[:5].tolist()
        votes = np.bincount([y[j] for j in nearest], minlength=3)
        assert got[i] == int(np.argmax(votes))
    sep_y = [int(v > 0) for v in x[:, 0]]
    pred = linear_probe(x, sep_y, x, c=100.0)
    assert (pred == np.array(sep_y)).mean() == 1.0


def test_probe_task_on_the_tiny_corpus(corpus):
    assert TASK.name == "image_probe" and TASK.metric == "accuracy" and not ImageProbe.trains
    pixels = PixelUpstream(PixelConfig(image_size=8, channels=1))
    task = ImageProbe(ImageProbeConfig(subset="digits", factor="digit"), _ctx(pixels, corpus))
    metrics, preds = task.run_evaluation("test")
    assert len(preds) == len(task.split("test").targets) and metrics["accuracy"] > 0.85 and metrics["knn_accuracy"] > 0.85
    assert 0 < metrics["chance"] < 0.2
    line = task.format_prediction("test", 0, preds[0]).split("\t")
    assert line[0].startswith("digit_") and line[1] in task.classes and line[2] in task.classes
    assert task.layer_weights() == [1.0]
    torch.manual_seed(0)
    vit = ImageProbe(ImageProbeConfig(factor="colour", layer=0), _ctx(_TinyViT().eval(), corpus))
    metrics, _ = vit.run_evaluation("test")
    assert set(metrics) == {"accuracy", "knn_accuracy", "chance"} and vit.layer_weights() == [1.0, 0.0]
    with pytest.raises(FileNotFoundError, match="dict.nosuch.txt"):
        ImageProbe(ImageProbeConfig(factor="nosuch"), _ctx(pixels, corpus)).classes
