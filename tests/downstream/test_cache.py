"""Feature cache: equals recomputation, is reused, serves single layers, writes atomically."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from speechssl import audio
from speechssl.data.manifest import read_manifest, write_manifest
from speechssl.downstream.cache import CACHE_FORMAT_VERSION, CachedSplit, FeatureCache
from speechssl.downstream.upstreams import LoadedUpstream, load_upstream


class _Counting(nn.Module):
    """Wraps an upstream and counts the utterances it is run on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.hidden_sizes = inner.hidden_sizes
        self.downsample_rate = inner.downsample_rate
        self.calls = 0

    def forward(self, wavs):
        self.calls += len(wavs)
        return self.inner(wavs)


@pytest.fixture()
def split(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(7):
        n = int(rng.integers(3000, 12000))
        audio.save(tmp_path / "wav" / f"u{i}.wav", (0.1 * rng.normal(size=n)).astype(np.float32))
        rows.append((f"wav/u{i}.wav", n))
    write_manifest(tmp_path / "train.tsv", tmp_path, rows)
    return read_manifest(tmp_path / "train.tsv")


@pytest.fixture(scope="module")
def hubert():
    return load_upstream("random:hubert@tiny")


def _counting(up: LoadedUpstream) -> LoadedUpstream:
    return LoadedUpstream(model=_Counting(up.model), name=up.name, hash=up.hash, method=up.method)


def test_cache_equals_recomputation_and_is_reused(tmp_path, split, hubert):
    up = _counting(hubert)
    cache = FeatureCache(tmp_path / "cache", max_samples=20000)
    cached = cache.get(up, "train", split)
    assert up.model.calls == len(split)
    assert len(cached) == len(split) and cached.layers == list(range(up.num_layers))
    with torch.no_grad():
        for i in range(len(split)):
            ref = hubert.model([audio.load(split.audio_path(i))])
            for l, h in enumerate(cached[i]):
                assert h.dtype == torch.float32
                # batching with padding must not change outputs (upstream contract)
                torch.testing.assert_close(h, ref["hidden_states"][l][0], atol=1e-4, rtol=1e-4)
    again = cache.get(up, "train", split)
    assert up.model.calls == len(split)            # read back, not recomputed
    assert again.directory == cached.directory
    # a single layer is served from the all-layer cache without running the upstream
    one = cache.get(up, "train", split, layers=[-1])
    assert up.model.calls == len(split) and one.layers == [up.num_layers - 1]
    assert torch.equal(one[3][0], cached[3][-1])
    # nothing half-written is left behind, and the metadata records what is there
    leftovers = [p for p in cached.directory.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    meta = json.loads((cached.directory / "meta.json").read_text())
    assert meta["format_version"] == CACHE_FORMAT_VERSION and meta["upstream"]["hash"] == hubert.hash
    arr = np.load(cached.directory / "layer_00.npy", mmap_mode="r")
    assert arr.shape == (int(cached.lengths.sum()), 192)


def test_single_layer_cache_fp16_and_keys(tmp_path, split, hubert):
    up = _counting(hubert)
    cache16 = FeatureCache(tmp_path / "c16", dtype="float16")
    only = cache16.get(up, "train", split, layers=[2])
    assert only.layers == [2] and up.model.calls == len(split)
    assert np.load(only.directory / "layer_02.npy", mmap_mode="r").dtype == np.float16
    full = FeatureCache(tmp_path / "c32").get(hubert, "train", split, layers=[2])
    torch.testing.assert_close(only[0][0], full[0][0], atol=2e-2, rtol=1e-2)
    # a different manifest, layer choice or dtype gets its own directory
    other = read_manifest(split.source)
    other.paths, other.sizes = other.paths[:3], other.sizes[:3]
    assert cache16.directory(up, "train", other, [2]) != only.directory
    assert cache16.directory(up, "train", split, [1]) != only.directory
    assert FeatureCache(tmp_path / "c16", dtype="float16").directory(up, "train", split, [2]) == only.directory
    assert FeatureCache(tmp_path / "c16", dtype="float32").directory(up, "train", split, [2]) != only.directory


def test_failed_build_leaves_nothing(tmp_path, split, hubert):
    class Boom(nn.Module):
        hidden_sizes, downsample_rate = hubert.model.hidden_sizes, 320

        def forward(self, wavs):
            raise RuntimeError("boom")

    up = LoadedUpstream(model=Boom(), name="boom", hash="0" * 64, method="x")
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(RuntimeError, match="boom"):
        cache.get(up, "train", split)
    assert not any((tmp_path / "cache").rglob("meta.json"))
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "cache").rglob("*"))


def test_reading_a_foreign_format_version_fails(tmp_path, split):
    up = load_upstream("mfcc")
    cached = FeatureCache(tmp_path / "c").get(up, "train", split)
    meta = json.loads((cached.directory / "meta.json").read_text())
    meta["format_version"] = 999
    (cached.directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="cache format 999"):
        CachedSplit(cached.directory)


def test_moments_match_numpy(tmp_path, split, hubert):
    cached = FeatureCache(tmp_path / "c").get(hubert, "train", split)
    mean, std = cached.moments(chunk=100)            # several chunks
    frames = [torch.cat([cached[i][l] for i in range(len(cached))]).double() for l in range(len(cached.layers))]
    torch.testing.assert_close(mean, torch.stack([f.mean(0) for f in frames]).float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(std, torch.stack([f.std(0, unbiased=False) for f in frames]).float(),
                               atol=1e-4, rtol=1e-4)


def test_compute_hidden_states_runs_the_upstream_frozen(split, hubert):
    """Batches go through run_frozen: eval mode (restored after), no gradients, the layers asked."""
    from speechssl.downstream.cache import compute_hidden_states

    model = hubert.model
    model.train()
    try:
        seen = 0
        for rows, states, lengths in compute_hidden_states(hubert, split, [0, 2], max_samples=20000):
            assert len(states) == 2 and lengths.device.type == "cpu"
            assert split.sizes[rows[0]] == max(split.sizes[i] for i in rows)  # longest first in a batch
            with torch.no_grad():
                model.eval()
                ref = model([audio.load(split.audio_path(i)) for i in rows])
                model.train()
            for got, l in zip(states, (0, 2)):
                assert not got.requires_grad
                torch.testing.assert_close(got, ref["hidden_states"][l], atol=0, rtol=0)
            assert torch.equal(lengths, ref["lengths"].cpu())
            seen += len(rows)
        assert seen == len(split) and model.training
    finally:
        model.eval()
