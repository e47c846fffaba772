"""k-means fitting: agreement with sklearn, seeding, streaming/sharded fits, repair, errors."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from speechssl.cluster import Rows, fit_kmeans, kmeans_plusplus


def _blobs(n: int = 3000, d: int = 8, centers: int = 12, seed: int = 0) -> np.ndarray:
    x, _ = make_blobs(n_samples=n, n_features=d, centers=centers, cluster_std=2.0, random_state=seed)
    return x.astype(np.float32)


@pytest.mark.parametrize("k", [5, 12, 30])
def test_inertia_within_1pct_of_sklearn_lloyd(k: int) -> None:
    x = _blobs()
    ref = KMeans(n_clusters=k, algorithm="lloyd", n_init=5, random_state=0).fit(x)
    model = fit_kmeans(x, k, n_init=5, seed=0)
    ours = model.inertia_of(x)
    assert ours <= ref.inertia_ * 1.01, (ours, ref.inertia_)
    # The stored inertia is the one of the returned centroids.
    assert model.inertia == pytest.approx(ours, rel=1e-5)


def test_inertia_within_1pct_of_sklearn_with_sampled_init() -> None:
    x = _blobs(n=6000)
    ref = KMeans(n_clusters=20, algorithm="lloyd", n_init=3, random_state=0).fit(x)
    # The initialisation phase runs on 1000 rows, then Lloyd refines on all 6000.
    model = fit_kmeans(x, 20, n_init=3, init_size=1000, seed=1)
    assert model.inertia_of(x) <= ref.inertia_ * 1.01


@pytest.mark.parametrize("bf16", [False, True])
def test_kmeans_plusplus_picks_one_row_per_separated_blob(bf16: bool) -> None:
    x, y = make_blobs(n_samples=2000, n_features=4, centers=10, cluster_std=0.05, center_box=(-50, 50),
                      random_state=3)
    xt = torch.from_numpy(x.astype(np.float32))
    centroids, idx = kmeans_plusplus(xt, 10, generator=torch.Generator().manual_seed(0), bf16=bf16)
    assert torch.equal(centroids, xt[idx])
    assert sorted(y[idx.numpy()].tolist()) == list(range(10))


def test_same_seed_same_centroids_other_seed_differs() -> None:
    x = _blobs(n=2000, centers=30)
    a = fit_kmeans(x, 25, seed=7, init_size=500)
    b = fit_kmeans(x, 25, seed=7, init_size=500)
    c = fit_kmeans(x, 25, seed=8, init_size=500)
    assert torch.equal(a.centroids, b.centroids)
    assert not torch.equal(a.centroids, c.centroids)


def test_sharded_memmap_fit_equals_in_memory_fit(tmp_path) -> None:
    x = _blobs(n=5000, d=6, centers=15, seed=2)
    cut = [0, 1234, 3001, 5000]
    blocks = []
    for i in range(3):
        np.save(tmp_path / f"s{i}.npy", x[cut[i]:cut[i + 1]])
        blocks.append(np.load(tmp_path / f"s{i}.npy", mmap_mode="r"))
    kw = dict(n_init=2, init_size=800, seed=3, chunk_rows=700)
    single = fit_kmeans(torch.from_numpy(x), 15, **kw)
    sharded = fit_kmeans(Rows(blocks, names=["s0", "s1", "s2"]), 15, **kw)
    assert single.n_iter > 0  # the full-data phase ran
    torch.testing.assert_close(sharded.centroids, single.centroids, rtol=1e-5, atol=1e-5)
    assert sharded.inertia == pytest.approx(single.inertia, rel=1e-5)  # float32 GEMM rounding per chunk


def test_rows_ranges_select_the_right_rows(tmp_path) -> None:
    a = np.arange(20, dtype=np.float32).reshape(10, 2)
    b = -np.arange(12, dtype=np.float32).reshape(6, 2)
    rows = Rows([a, b], names=["a", "b"], ranges=[[(1, 3), (5, 9)], [(0, 2), (4, 6)]])
    want = np.concatenate([a[1:3], a[5:9], b[0:2], b[4:6]])
    got = torch.cat([x for _, x in rows.chunks(3)])
    np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(rows.gather(np.array([0, 2, 6, 9])).numpy(), want[[0, 2, 6, 9]])
    assert rows.describe_row(7) == "row 1 of b"


def test_empty_cluster_is_repaired(caplog) -> None:
    x = _blobs(n=1500, d=4, centers=4, seed=5)
    xt = torch.from_numpy(x)
    init = xt[:4].clone()
    init[3] = 1e4  # no point is ever nearest to this centroid
    with caplog.at_level(logging.INFO, logger="speechssl.cluster"):
        model = fit_kmeans(xt, 4, init=init, seed=0)
    assert "re-seeded 1 empty cluster" in caplog.text
    counts = torch.bincount(model.predict(xt), minlength=4)
    assert (counts > 0).all()
    assert model.centroids[3].abs().max() < 100


def test_fewer_distinct_points_than_clusters_warns(caplog) -> None:
    x = np.repeat(np.eye(3, dtype=np.float32), 20, axis=0)
    with caplog.at_level(logging.WARNING, logger="speechssl.cluster"):
        model = fit_kmeans(x, 4, seed=0)
    assert "fewer distinct points than clusters" in caplog.text
    assert model.inertia == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("n", [1, 3])
def test_k_larger_than_rows_is_an_error(n: int) -> None:
    with pytest.raises(ValueError, match=r"n_clusters=4 must be between 1 and the number of rows \(" + str(n)):
        fit_kmeans(np.zeros((n, 3), np.float32), 4)


def test_empty_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="no rows"):
        fit_kmeans(np.zeros((0, 3), np.float32), 2)


def test_nan_row_is_named(tmp_path) -> None:
    x = _blobs(n=400, d=3)
    x[123, 1] = np.nan
    with pytest.raises(ValueError, match="row 123 of input"):
        fit_kmeans(x, 3)
    # A NaN outside the initialisation sample is found on the first full pass, named by shard.
    np.save(tmp_path / "a.npy", _blobs(n=300, d=3))
    np.save(tmp_path / "b.npy", x)
    rows = Rows([np.load(tmp_path / "a.npy", mmap_mode="r"), np.load(tmp_path / "b.npy", mmap_mode="r")],
                names=["a.npy", "b.npy"])
    with pytest.raises(ValueError, match="row 123 of b.npy"):
        fit_kmeans(rows, 3, init_size=50, seed=0)


def test_bad_init_and_options_are_errors() -> None:
    x = _blobs(n=200, d=3)
    with pytest.raises(ValueError, match=r"init centroids have shape \(2, 3\), expected \(4, 3\)"):
        fit_kmeans(x, 4, init=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="init must be"):
        fit_kmeans(x, 4, init="kmeans")
    with pytest.raises(ValueError, match="n_init >= 1"):
        fit_kmeans(x, 4, n_init=0)
    with pytest.raises(ValueError, match="2-D"):
        fit_kmeans(np.zeros(10, np.float32), 2)


@pytest.mark.gpu
def test_cuda_fit_and_predict_match_cpu() -> None:
    x = torch.from_numpy(_blobs(n=4000, d=16, centers=20, seed=4))
    cpu = fit_kmeans(x, 20, init_size=1000, seed=0)
    gpu = fit_kmeans(x.cuda(), 20, init_size=1000, seed=0)
    assert gpu.centroids.device.type == "cuda"
    torch.testing.assert_close(gpu.centroids.cpu(), cpu.centroids, rtol=1e-4, atol=1e-4)
    assert torch.equal(gpu.predict(x.cuda()).cpu(), cpu.predict(x))


def _fairseq_minibatch_kmeans(k: int):
    """sklearn's MiniBatchKMeans exactly as fairseq's HuBERT ``learn_kmeans.py`` configures it."""
    from sklearn.cluster import MiniBatchKMeans

    return MiniBatchKMeans(n_clusters=k, init="k-means++", n_init=20, batch_size=10000, max_iter=100,
                           max_no_improvement=100, reassignment_ratio=0.0, tol=0.0, compute_labels=False,
                           init_size=None, random_state=0)


@pytest.mark.parametrize("data_seed,n_init", [(3, None), (5, None), (2, 16)])
def test_defaults_reach_fairseq_minibatch_kmeans_inertia_on_a_gaussian_mixture(data_seed: int, n_init) -> None:
    # 40 well-separated unit-variance blobs. On data seed 3 one k-means++ seeding ends 15%
    # above sklearn (n_init 20), the default best-of-4 seedings must not. Data seed 2 is a
    # known miss of the default: all 4 seedings (and 8) end 12% above sklearn; 16 reach it.
    x, _ = make_blobs(n_samples=4000, n_features=10, centers=40, cluster_std=1.0, random_state=data_seed)
    x = x.astype(np.float32)
    ref = -_fairseq_minibatch_kmeans(40).fit(x).score(x)
    model = fit_kmeans(x, 40, seed=0, n_init=n_init)
    assert model.inertia_of(x) <= ref * 1.002, (model.inertia_of(x), ref)


def test_seedings_side_by_side_return_the_lowest_potential() -> None:
    from speechssl.cluster.kmeans import _seedings, default_n_init

    x = torch.from_numpy(_blobs(n=2000, d=6, centers=20, seed=6))
    idx, pot = _seedings(x, 20, generator=torch.Generator().manual_seed(0), n_local_trials=None, bf16=False,
                         n_seedings=5)
    assert idx.shape == (5, 20) and pot.shape == (5,)
    for r in range(5):  # the potential is the inertia of the seeding's rows as centroids
        want = torch.cdist(x.double(), x[idx[r]].double()).pow(2).min(dim=1).values.sum()
        assert float(pot[r]) == pytest.approx(float(want), rel=1e-4)
    best, best_idx = kmeans_plusplus(x, 20, generator=torch.Generator().manual_seed(0), n_seedings=5)
    assert torch.equal(best_idx, idx[int(pot.argmin())]) and torch.equal(best, x[best_idx])
    # One seeding draws exactly what a single k-means++ run draws.
    single = _seedings(x, 20, generator=torch.Generator().manual_seed(0), n_local_trials=None, bf16=False,
                       n_seedings=1)[0][0]
    assert torch.equal(kmeans_plusplus(x, 20, generator=torch.Generator().manual_seed(0))[1], single)
    assert default_n_init(100, 39) == 4 and default_n_init(500, 768) == 1


def test_fit_sample_beyond_fit_size_keeps_the_inertia() -> None:
    """Past ``fit_size`` rows the last phase runs on a uniform sample: same quality, fewer rows read per pass."""
    x = _blobs(n=60000, d=8, centers=12, seed=3)
    k = 12
    full = fit_kmeans(x, k, seed=0, fit_size=0, init_size=2000)
    sampled = fit_kmeans(x, k, seed=0, fit_size=12000, init_size=2000)
    assert full.n_samples == 60000 and sampled.n_samples == 12000
    # the stored inertia is over the fitting sample: about a fifth of the full data's
    assert sampled.inertia == pytest.approx(sampled.inertia_of(x) * 12000 / 60000, rel=0.05)
    assert sampled.inertia_of(x) <= full.inertia_of(x) * 1.002
    ref = KMeans(n_clusters=k, algorithm="lloyd", n_init=3, random_state=0).fit(x)
    assert sampled.inertia_of(x) <= ref.inertia_ * 1.002


def test_nan_outside_the_fit_sample_is_still_named() -> None:
    x = _blobs(n=5000, d=3)
    x[4321, 2] = np.inf
    with pytest.raises(ValueError, match="row 4321 of input"):
        fit_kmeans(x, 3, init_size=100, fit_size=200, seed=0)
    with pytest.raises(ValueError, match="fit_size >= 0"):
        fit_kmeans(x, 3, fit_size=-1)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kmeans_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x = np.load(os.path.join(out_dir, "x.npy"))
        cut = [0, 2500, len(x)][rank:rank + 2]  # uneven shares
        model = fit_kmeans(x[cut[0]:cut[1]], 6, seed=0, init_size=800, fit_size=3000)
        torch.save({"centroids": model.centroids, "n": model.n_samples, "inertia": model.inertia},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.barrier()
        dist.destroy_process_group()


def test_two_ranks_fit_the_centroids_of_one_process_also_on_a_fit_sample(tmp_path) -> None:
    """Every rank samples the same fitting rows (its own seed stream, not rank 0's initialisation draws)."""
    import torch.multiprocessing as mp

    x = _blobs(n=7000, d=4, centers=6, seed=5)
    np.save(tmp_path / "x.npy", x)
    mp.spawn(_kmeans_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    one = fit_kmeans(x, 6, seed=0, init_size=800, fit_size=3000)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for g in got:
        assert g["n"] == one.n_samples == 3000
        torch.testing.assert_close(g["centroids"], one.centroids, rtol=0, atol=1e-4)
        assert g["inertia"] == pytest.approx(one.inertia, rel=1e-6)
