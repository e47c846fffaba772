"""KMeansModel: exact assignment, inertia, pickle-free file format."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from speechssl.cluster import KMeansModel
from speechssl.cluster.model import col_min, nearest_centroid, squared_distances


def _brute_force(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return squared_distances(x.double(), c.double()).argmin(dim=1)


def test_predict_equals_brute_force_argmin() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5000, 16, generator=g) * 3 + 10  # away from the origin: cancellation matters
    c = torch.randn(50, 16, generator=g) * 3 + 10
    model = KMeansModel(c)
    torch.testing.assert_close(model.predict(x, chunk_rows=777), _brute_force(x, c), rtol=0, atol=0)


def test_predict_resolves_near_ties_exactly() -> None:
    # Points almost halfway between two centroids: float32 GEMM distances cannot separate them.
    c = torch.tensor([[100.0, 100.0, 0.0], [100.0, 100.0, 1.0]])
    z = torch.tensor([0.5 - 3e-6, 0.5 + 3e-6] * 50)
    x = torch.stack([torch.full_like(z, 100.0), torch.full_like(z, 100.0), z], dim=1)
    want = _brute_force(x, c)
    assert want.tolist() == [0, 1] * 50
    assert torch.equal(KMeansModel(c).predict(x), want)


def test_predict_accepts_numpy_and_checks_dimension() -> None:
    c = torch.randn(4, 5)
    x = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    model = KMeansModel(c, feature="mfcc 5-d")
    assert torch.equal(model.predict(x), _brute_force(torch.from_numpy(x), c))
    with pytest.raises(ValueError, match=r"dimension 7 but the k-means model was fitted on dimension 5 \(mfcc 5-d\)"):
        model.predict(np.zeros((3, 7), np.float32))
    bad = x.copy()
    bad[17, 2] = np.inf
    with pytest.raises(ValueError, match="row 17 of input"):
        model.predict(bad)


def test_inertia_of_matches_definition() -> None:
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(1000, 7, generator=g), torch.randn(9, 7, generator=g)
    want = squared_distances(x.double(), c.double()).min(dim=1).values.sum().item()
    assert KMeansModel(c).inertia_of(x, chunk_rows=100) == pytest.approx(want, rel=1e-5)


def test_save_load_round_trip_without_pickle(tmp_path) -> None:
    c = torch.randn(6, 3)
    model = KMeansModel(c, inertia=12.5, n_samples=100, n_iter=7, converged=True, seed=3,
                        feature="hubert layer 6", extra={"split": "train"})
    path = tmp_path / "km.safetensors"
    model.save(path)
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])  # a plain safetensors file
    assert header["centroids"]["shape"] == [6, 3] and header["__metadata__"]["n_clusters"] == "6"
    assert b"pickle" not in raw and not raw.startswith(b"\x80")
    loaded = KMeansModel.load(path)
    assert torch.equal(loaded.centroids, c)
    assert (loaded.inertia, loaded.n_samples, loaded.n_iter, loaded.converged, loaded.seed, loaded.feature) == \
        (12.5, 100, 7, True, 3, "hubert layer 6")
    assert loaded.extra == {"split": "train"}


def test_load_rejects_other_files(tmp_path) -> None:
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError, match="k-means model not found"):
        KMeansModel.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        KMeansModel.load(tmp_path / "junk.safetensors")
    save_file({"weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="no 'centroids' tensor"):
        KMeansModel.load(tmp_path / "other.safetensors")


@pytest.mark.parametrize("k", [1, 2, 100, 500, 5000])
def test_col_min_equals_first_minimum_including_ties(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    d = torch.randn(k, 700, generator=g)
    d[k // 3, 5] = d[k - 1, 5] = d[:, 5].min() - 1.0  # a tie: the first index wins
    d[:, 9] = 0.25  # a column of equal values
    want_v = d.amin(dim=0)
    want_i = torch.tensor([int((col == col.min()).nonzero()[0]) for col in d.T])
    for inplace in (False, True):
        v, i = col_min(d.clone(), inplace=inplace)
        assert torch.equal(v, want_v) and torch.equal(i, want_i)


def test_nearest_centroid_equals_brute_force() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 39, generator=g) * 2 + 5
    c = torch.randn(100, 39, generator=g) * 2 + 5
    shifted, labels = nearest_centroid(x, c)
    assert torch.equal(labels, _brute_force(x, c))
    exact = squared_distances(x.double(), c.double()).min(dim=1).values - x.double().pow(2).sum(1)
    torch.testing.assert_close(shifted.double(), exact, rtol=0, atol=2e-3)
