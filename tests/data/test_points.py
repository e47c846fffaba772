"""PointDataset: subsampling, rotation, scale and jitter checked against the stored points."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speechssl.data.files import write_file_manifest
from speechssl.data.manifest import FormatError, write_manifest
from speechssl.data.points import PointDataset

COUNTS = [50, 200, 10]
NONE = dict(rotation=None, scale=None, jitter=0.0, normalize=False)


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("points")
    rng = np.random.default_rng(0)
    for i, n in enumerate(COUNTS):
        np.save(root / f"p{i}.npy", (rng.standard_normal((n, 3)) * [1, 2, 3] + 5).astype(np.float32))
    write_file_manifest(root / "train.tsv", root, [f"p{i}.npy" for i in range(3)], "points")
    return root


def _stored(root: Path, i: int) -> torch.Tensor:
    return torch.from_numpy(np.load(root / f"p{i}.npy"))


def test_evaluation_subsamples_evenly_without_augmenting(clouds):
    ds = PointDataset(clouds / "train.tsv", num_points=16, augment=False, normalize=False)
    assert ds.sizes.tolist() == [1, 1, 1]
    item = ds[1]
    assert item["choice"].tolist() == [j * 200 // 16 for j in range(16)]
    assert torch.equal(item["points"], _stored(clouds, 1)[item["choice"]])
    assert ds[2]["choice"].tolist() == [j % 10 for j in range(16)]  # 10 < 16 points: wrap around
    assert torch.equal(item["rotation"], torch.eye(3))


def test_random_subset_of_distinct_points(clouds):
    ds = PointDataset(clouds / "train.tsv", num_points=16, **NONE)
    choices = set()
    for epoch in (1, 2, 3):
        ds.set_epoch(epoch)
        item = ds[0]
        assert len(set(item["choice"].tolist())) == 16
        assert torch.equal(item["points"], _stored(clouds, 0)[item["choice"]])
        choices.add(tuple(item["choice"].tolist()))
        short = ds[2]["choice"]
        assert set(short.tolist()) == set(range(10)) and len(short) == 16
    assert len(choices) == 3


@pytest.mark.parametrize("rotation", ["z", "so3"])
def test_rotation_is_the_reported_one_and_keeps_distances(clouds, rotation):
    ds = PointDataset(clouds / "train.tsv", num_points=32, **dict(NONE, rotation=rotation))
    item = ds[1]
    base = _stored(clouds, 1)[item["choice"]]
    assert torch.allclose(item["points"], base @ item["rotation"].T, atol=1e-5)
    def dist(x):
        return torch.cdist(x.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist")

    assert torch.allclose(dist(item["points"]), dist(base), atol=1e-4)
    if rotation == "z":
        assert torch.allclose(item["points"][:, 2], base[:, 2], atol=1e-5)


def test_normalise_scale_and_jitter(clouds):
    item = PointDataset(clouds / "train.tsv", num_points=64, augment=False)[1]
    assert torch.allclose(item["points"].mean(0), torch.zeros(3), atol=1e-5)
    assert abs(item["points"].norm(dim=1).max().item() - 1) < 1e-5
    scaled = PointDataset(clouds / "train.tsv", num_points=64, **dict(NONE, scale=(0.5, 2.0)))[1]
    ratio = scaled["points"] / _stored(clouds, 1)[scaled["choice"]]
    assert torch.allclose(ratio, ratio[0, 0].expand_as(ratio), atol=1e-5) and 0.5 <= float(ratio[0, 0]) <= 2.0
    jit = PointDataset(clouds / "train.tsv", num_points=64, **dict(NONE, jitter=0.05, jitter_clip=0.02))[1]
    noise = jit["points"] - _stored(clouds, 1)[jit["choice"]]
    assert 0 < noise.abs().max() <= 0.02 + 1e-6


def test_deterministic_and_independent_of_global_rng(clouds):
    torch.manual_seed(0)
    a = PointDataset(clouds / "train.tsv", num_points=16, rotation="so3", seed=2)[0]
    torch.manual_seed(7)
    torch.randn(3)
    b = PointDataset(clouds / "train.tsv", num_points=16, rotation="so3", seed=2)[0]
    assert torch.equal(a["points"], b["points"]) and torch.equal(a["choice"], b["choice"])
    c = PointDataset(clouds / "train.tsv", num_points=16, rotation="so3", seed=3)[0]
    assert not torch.equal(a["points"], c["points"])


def test_variable_sizes_pad_with_lengths_and_mask(clouds):
    ds = PointDataset(clouds / "train.tsv", num_points=None, augment=False, normalize=False)
    assert ds.sizes.tolist() == COUNTS
    batch = ds.collater()([ds[i] for i in range(3)])
    assert batch["points"].shape == (3, 200, 3) and batch["lengths"].tolist() == COUNTS
    assert batch["padding_mask"].sum(1).tolist() == [150, 0, 190]
    assert torch.equal(batch["points"][2, :10], _stored(clouds, 2)) and batch["points"][2, 10:].abs().sum() == 0
    fixed = PointDataset(clouds / "train.tsv", num_points=16)
    batch = fixed.collater()([fixed[0], fixed[2]])
    assert batch["points"].shape == (2, 16, 3) and not batch["padding_mask"].any()


def test_errors_name_the_manifest_line(clouds, tmp_path):
    np.save(tmp_path / "four.npy", np.zeros((5, 4), dtype=np.float32))
    np.save(tmp_path / "ints.npy", np.zeros((5, 3), dtype=np.int64))
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    for name, rel, pattern in [("a", "four.npy", r"a\.tsv:2: .*four\.npy: expected an \(N, 3\) float array"),
                               ("b", "ints.npy", r"b\.tsv:2: .*ints\.npy: expected an \(N, 3\) float"),
                               ("c", "bad.npy", r"c\.tsv:2: .*bad\.npy: not a \.npy file: found a text file")]:
        write_manifest(tmp_path / f"{name}.tsv", tmp_path, [(rel, 5)])
        with pytest.raises(FormatError, match=pattern):
            PointDataset(tmp_path / f"{name}.tsv")
    write_manifest(tmp_path / "d.tsv", clouds, [("p0.npy", 50), ("p1.npy", 50)])
    with pytest.raises(FormatError, match=r"d\.tsv:3: .*p1\.npy: has size 200 but the manifest says 50 \(points\)"):
        PointDataset(tmp_path / "d.tsv")
    nan = np.zeros((4, 3), dtype=np.float32)
    nan[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    write_manifest(tmp_path / "e.tsv", tmp_path, [("nan.npy", 4)])
    with pytest.raises(FormatError, match=r"e\.tsv:2: .*nan\.npy: point 2 is not finite"):
        PointDataset(tmp_path / "e.tsv")[0]
