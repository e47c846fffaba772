"""Benchmark: speechssl k-means vs sklearn MiniBatchKMeans with fairseq's HuBERT parameters and faiss.

    python tools/bench/kmeans.py [--quick] [--threads 1] [--repeats 3] [--configs blobs,mfcc,hubert]
                                 [--feats PATH.npy:K ...] [--device cpu|cuda]

For each configuration, the same data and the same K go through, in the same run:

- ``speechssl`` : ``speechssl.cluster.fit_kmeans`` with its defaults (seedings side by side
  on a subset, the lowest k-means++ potential wins, Lloyd on a sample, then chunked Lloyd on
  every row, or on a sample of 2048 rows per cluster when there are more);
- ``sklearn``   : ``MiniBatchKMeans`` exactly as fairseq's
  ``examples/hubert/simple_kmeans/learn_kmeans.py`` configures it (k-means++, n_init 20,
  batch 10000, max_iter 100, max_no_improvement 100, reassignment_ratio 0, tol 0,
  compute_labels False, init_size None), run once (it is slow);
- ``faiss``     : ``faiss.Kmeans(d, k, seed=0)`` with faiss's defaults (niter 25, one
  redo, at most 256 K training rows); ``pip install -e .[bench]``. Skipped when missing.

ours and faiss run ``--repeats`` times, interleaved (ours, faiss, ours, faiss, ...), and
their median times are reported; every run is deterministic, so inertias do not vary.
Every method's inertia is evaluated the same way: the sum over ALL rows of the squared
distance to the nearest centroid, in float64. ``--threads`` caps torch's, faiss's and
sklearn's threads alike (default 1: like for like on a shared machine).

Prints ONE JSON line: per configuration, wall (``time_s``) and process CPU (``cpu_s``, steadier
when other processes share the cores) seconds and inertia of each method, and the ratios
``speed_vs_sklearn`` (sklearn seconds / ours, want >= 20), ``time_vs_faiss`` (ours seconds /
faiss, want <= 1.5), ``inertia_vs_sklearn`` and ``inertia_vs_faiss`` (ours / theirs, <= 1
means ours is at least as good), each for wall and CPU time.

Data (seeded, no downloads):
- ``blobs`` : 200k x 39, K=100: 100 isotropic unit-variance Gaussians with centres uniform in
  [-10, 10]^39 (sklearn ``make_blobs``-like: about K well-separated modes, where seeding
  matters most);
- ``mfcc``  : 200k x 39, K=100: a Zipf-weighted mixture of 1000 anisotropic Gaussians (more
  modes than clusters, as speech frames have: phones x contexts x speakers) with an MFCC-like
  layout (13 statics with a large c0 offset, deltas and delta-deltas at smaller scales);
- ``hubert``: 50k x 768, K=500: a Zipf-weighted mixture of 1000 Gaussians in a 64-d latent
  space, projected to 768-d, plus isotropic noise and a common offset (like hidden states);
- ``--feats PATH.npy:K``: real features, e.g. a ``speechssl features dump`` shard
  (``exp/quickstart/hubert/features/mfcc39/train_0_1.npy:50``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

CONFIGS = {
    # name: (rows, dim, clusters, components)
    "blobs": (200_000, 39, 100, 100),
    "mfcc": (200_000, 39, 100, 1000),
    "hubert": (50_000, 768, 500, 1000),
}
QUICK = {"blobs": (20_000, 39, 50, 50), "mfcc": (20_000, 39, 50, 300), "hubert": (10_000, 128, 64, 300)}


def make_data(name: str, n: int, d: int, comps: int, seed: int = 0) -> np.ndarray:
    """Deterministic mixture-of-Gaussians data, ``(n, d)`` float32."""
    rng = np.random.default_rng(seed)
    if name == "blobs":
        centres = rng.uniform(-10.0, 10.0, size=(comps, d))
        x = centres[rng.integers(comps, size=n)] + rng.standard_normal((n, d))
        return np.ascontiguousarray(x, dtype=np.float32)
    w = 1.0 / np.arange(1, comps + 1) ** 0.9
    w /= w.sum()
    comp = rng.choice(comps, size=n, p=w)
    if name == "mfcc":
        static = d // 3
        block_scale = np.concatenate([np.full(static, 1.0), np.full(static, 0.35), np.full(d - 2 * static, 0.12)])
        means = rng.normal(0.0, 6.0, size=(comps, d)) * block_scale
        means[:, 0] += 60.0  # c0 / log-energy sits far from the origin
        scales = rng.uniform(0.5, 2.0, size=(comps, d)) * block_scale * 2.0
        x = means[comp] + rng.standard_normal((n, d)) * scales[comp]
    else:
        latent = 64
        means = rng.normal(0.0, 2.5, size=(comps, latent))
        scales = rng.uniform(0.4, 1.2, size=(comps, latent))
        z = means[comp] + rng.standard_normal((n, latent)) * scales[comp]
        proj = rng.normal(0.0, 1.0 / np.sqrt(latent), size=(latent, d))
        x = z @ proj + rng.normal(0.0, 0.3, size=(n, d)) + rng.normal(0.0, 1.0, size=d)
    return np.ascontiguousarray(x, dtype=np.float32)


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    """Sum over all rows of the squared distance to the nearest centroid (float64, chunked)."""
    xt = torch.from_numpy(x)
    c = torch.from_numpy(np.asarray(centroids, dtype=np.float64))
    mu = c.mean(dim=0)
    c0 = c - mu
    c_sq = c0.pow(2).sum(dim=1)
    total = 0.0
    for s in range(0, len(xt), 8192):
        xb = xt[s:s + 8192].double() - mu
        d = (xb.pow(2).sum(dim=1, keepdim=True) - 2.0 * xb @ c0.T + c_sq).clamp_min(0)
        total += float(d.min(dim=1).values.sum())
    return total


def _timed(fn) -> tuple[float, float, object]:
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def run_ours(x: np.ndarray, k: int, device: str) -> dict:
    from speechssl.cluster import fit_kmeans

    data = torch.from_numpy(x)
    if device != "cpu":
        data = data.to(device)
        torch.cuda.synchronize()

    def fit():
        model = fit_kmeans(data, k, seed=0)
        if device != "cpu":
            torch.cuda.synchronize()
        return model

    elapsed, cpu, model = _timed(fit)
    return {"time_s": elapsed, "cpu_s": cpu, "inertia": inertia(x, model.centroids.cpu().numpy()),
            "n_iter": model.n_iter, "converged": model.converged}


def run_sklearn(x: np.ndarray, k: int, threads: int) -> dict:
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    km = MiniBatchKMeans(n_clusters=k, init="k-means++", n_init=20, batch_size=10000, max_iter=100,
                         max_no_improvement=100, reassignment_ratio=0.0, tol=0.0, compute_labels=False,
                         init_size=None, random_state=0)
    with threadpool_limits(threads):
        elapsed, cpu, _ = _timed(lambda: km.fit(x))
    return {"time_s": elapsed, "cpu_s": cpu, "inertia": inertia(x, km.cluster_centers_), "n_steps": int(km.n_steps_)}


def run_faiss(x: np.ndarray, k: int) -> dict:
    import faiss  # type: ignore[import-not-found]

    km = faiss.Kmeans(x.shape[1], k, seed=0)  # faiss defaults: niter 25, nredo 1, max 256 K training rows
    elapsed, cpu, _ = _timed(lambda: km.train(x))
    return {"time_s": elapsed, "cpu_s": cpu, "inertia": inertia(x, km.centroids), "niter": int(km.cp.niter)}


def _median_runs(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for key in ("time_s", "cpu_s"):
        out[key] = round(float(np.median([r[key] for r in runs])), 4)
        out[key.replace("_s", "_runs_s")] = [round(r[key], 4) for r in runs]
    return out


def _ratios(ours: dict, sk: dict | None, fa: dict | None) -> dict:
    r: dict = {}
    if sk:
        r["speed_vs_sklearn"] = round(sk["time_s"] / ours["time_s"], 2)
        r["speed_vs_sklearn_cpu"] = round(sk["cpu_s"] / ours["cpu_s"], 2)
        r["inertia_vs_sklearn"] = round(ours["inertia"] / sk["inertia"], 5)
    if fa:
        r["time_vs_faiss"] = round(ours["time_s"] / fa["time_s"], 2)
        r["time_vs_faiss_cpu"] = round(ours["cpu_s"] / fa["cpu_s"], 2)
        r["inertia_vs_faiss"] = round(ours["inertia"] / fa["inertia"], 5)
    return r


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke-testing")
    parser.add_argument("--device", default="cpu", help="device for speechssl (cpu or cuda); baselines run on CPU")
    parser.add_argument("--configs", default="blobs,mfcc,hubert",
                        help="comma-separated subset of: blobs, mfcc, hubert (empty: only --feats)")
    parser.add_argument("--feats", action="append", default=[], metavar="PATH.npy:K",
                        help="also cluster real (N, D) features from a .npy file into K clusters (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch, faiss and sklearn (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of ours and faiss (median)")
    parser.add_argument("--skip-sklearn", action="store_true", help="time only speechssl and faiss")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import faiss  # type: ignore[import-not-found]

        faiss.omp_set_num_threads(args.threads)
        have_faiss = True
    except ImportError:
        have_faiss = False
    sizes = QUICK if args.quick else CONFIGS
    jobs = []
    for name in filter(None, args.configs.split(",")):
        if name not in sizes:
            parser.error(f"unknown config {name!r}; choose from {', '.join(sizes)}")
        n, d, k, comps = sizes[name]
        jobs.append((f"{name} {n}x{d} k={k}", lambda n=n, d=d, comps=comps, name=name: make_data(name, n, d, comps), k))
    for spec in args.feats:
        path, _, k_text = spec.rpartition(":")
        if not path or not k_text.isdigit():
            parser.error(f"--feats expects PATH.npy:K, got {spec!r}")
        jobs.append((f"{os.path.basename(os.path.dirname(path)) or path} {k_text}",
                     lambda path=path: np.ascontiguousarray(np.load(path), dtype=np.float32), int(k_text)))
    results = []
    for label, load, k in jobs:
        x = load()
        ours_runs, faiss_runs = [], []
        for _ in range(max(1, args.repeats)):
            ours_runs.append(run_ours(x, k, args.device))
            if have_faiss:
                faiss_runs.append(run_faiss(x, k))
        ours = _median_runs(ours_runs)
        fa = _median_runs(faiss_runs) if faiss_runs else None
        sk = None if args.skip_sklearn else run_sklearn(x, k, args.threads)
        if sk:
            sk["time_s"], sk["cpu_s"] = round(sk["time_s"], 3), round(sk["cpu_s"], 3)
        results.append({"config": label, "n": int(x.shape[0]), "dim": int(x.shape[1]), "k": k,
                        **_ratios(ours, sk, fa), "speechssl": ours, "sklearn": sk,
                        "faiss": fa if fa is not None else "not installed (pip install -e .[bench])"})
    line = {
        "bench": "kmeans", "baseline": "sklearn MiniBatchKMeans (fairseq learn_kmeans.py parameters); faiss.Kmeans defaults",
        "configs": results, "device": args.device, "threads": args.threads, "repeats": args.repeats,
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(), "quick": args.quick,
        "torch": torch.__version__,
    }
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
