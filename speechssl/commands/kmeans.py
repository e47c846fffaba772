"""``speechssl kmeans``: fit a k-means model on dumped features, or describe one.

    speechssl kmeans fit --feat-dir D --split train --nshard N --n-clusters K --out km.safetensors
    speechssl kmeans info km.safetensors

Under ``torchrun --nproc-per-node P speechssl kmeans fit ...`` the P processes split the
shards into contiguous blocks (rank 0 the first ``ceil(nshard / P)``, ...) and fit together
(see ``speechssl.cluster.kmeans``); the result equals a single-process fit with the same seed.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

_log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kmeans_cmd", metavar="CMD", required=True)
    fit = sub.add_parser(
        "fit", help="fit k-means on <feat-dir>/<split>_<rank>_<nshard>.npy features",
        description="Fit k-means (greedy k-means++ on a sample, then chunked full-batch Lloyd) on dumped "
                    "features and save it as a safetensors file. Features are memmapped and streamed, so "
                    "the split may be larger than memory. Run under torchrun to fit with several processes.")
    fit.add_argument("--feat-dir", type=Path, required=True, help="directory of the dumped features")
    fit.add_argument("--split", required=True, help="split name, e.g. train")
    fit.add_argument("--nshard", type=int, required=True, help="number of feature shards of the split")
    fit.add_argument("--n-clusters", type=int, required=True, help="K, e.g. 100 (MFCC) or 500 (HuBERT layer)")
    fit.add_argument("--out", type=Path, required=True, help="model file to write (.safetensors)")
    fit.add_argument("--percent", type=float, default=1.0,
                     help="fraction of utterances of every shard to fit on, in (0, 1] (fairseq's recipe uses "
                          "0.1); default: all")
    fit.add_argument("--max-iter", type=int, default=100, help="max Lloyd updates per phase (default 100)")
    fit.add_argument("--tol", type=float, default=2e-3,
                     help="stop when a full pass lowers the inertia by at most this fraction (default 2e-3; the "
                          "sample phase uses tol/10; 1e-4 runs Lloyd nearly to convergence, ~3x slower)")
    fit.add_argument("--n-init", type=int, default=None,
                     help="k-means++ seedings run side by side on the seeding subset; the lowest-potential one is "
                          "kept (default: 4 when K*D <= 32768, else 1; more help on data with few, well-separated "
                          "clusters)")
    fit.add_argument("--init-size", type=int, default=None,
                     help="rows of the initialisation sample (default max(20000, 60*K))")
    fit.add_argument("--seed", type=int, default=0, help="random seed (utterance sampling and seeding)")
    fit.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun: cuda = the local rank)")
    fit.add_argument("--feature", default=None,
                     help="description of the features stored in the model (default: feat-dir and split)")
    fit.add_argument("--overwrite", action="store_true", help="refit even if --out exists")
    info = sub.add_parser("info", help="print the metadata of a k-means model file as JSON",
                          description="Print the metadata of a k-means model file as JSON.")
    info.add_argument("model", type=Path, help="k-means model file (.safetensors)")


def _setup_distributed(device: str) -> tuple[int, int, str]:
    """Join the torchrun process group if launched by torchrun; returns (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch
    import torch.distributed as dist

    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _fit_fingerprint(args: argparse.Namespace) -> dict:
    """What a fit depends on: every shard's content fingerprint and every option of the fit."""
    from speechssl.cluster.store import missing_shards, shard_fingerprint

    missing = missing_shards(args.feat_dir, args.split, args.nshard)
    if missing:
        raise FileNotFoundError(f"{len(missing)} feature shard file(s) missing in {args.feat_dir}: "
                                f"{', '.join(missing)}; run `speechssl features dump` for them first")
    return {"features": [shard_fingerprint(args.feat_dir, args.split, r, args.nshard) for r in range(args.nshard)],
            "n_clusters": args.n_clusters, "percent": args.percent, "max_iter": args.max_iter, "tol": args.tol,
            "n_init": args.n_init, "init_size": args.init_size, "seed": args.seed}


def _recorded_fingerprint(path: Path):
    """The fingerprint stored in an existing model file (None: unreadable or none stored)."""
    from speechssl.cluster.model import KMeansModel

    try:
        text = KMeansModel.load(path).extra.get("fingerprint")
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def _fit(args: argparse.Namespace) -> int:
    from speechssl.cluster.kmeans import fit_kmeans
    from speechssl.cluster.store import open_feature_rows
    from speechssl.fingerprint import same_inputs

    if args.nshard < 1:
        raise ValueError(f"--nshard must be >= 1, got {args.nshard}")
    fingerprint = _fit_fingerprint(args)
    if args.out.exists() and not args.overwrite and same_inputs(
            _recorded_fingerprint(args.out), fingerprint, str(args.out), action="fitting it again"):
        _log.info("%s exists and was fitted on these features with these options; skipping the fit "
                  "(pass --overwrite to refit)", args.out)
        return 0
    rank, world, device = _setup_distributed(args.device)
    try:
        # Contiguous blocks keep the global row order of a single-process run (same sample, same fit).
        per = -(-args.nshard // world)
        mine = range(rank * per, min(args.nshard, (rank + 1) * per))
        rows = open_feature_rows(args.feat_dir, args.split, args.nshard, ranks=mine, percent=args.percent,
                                 seed=args.seed)
        _log.info("rank %d/%d: %d frames of dimension %d from shards %s", rank, world, rows.num_rows, rows.dim,
                  list(mine))
        feature = args.feature or f"{args.feat_dir.name}/{args.split}"
        model = fit_kmeans(rows, args.n_clusters, max_iter=args.max_iter, tol=args.tol, n_init=args.n_init,
                           init_size=args.init_size, seed=args.seed, device=device, feature=feature,
                           progress=True)
        model.extra.update(split=args.split, percent=repr(args.percent),
                           fingerprint=json.dumps(fingerprint, sort_keys=True))
        if rank == 0:
            model.save(args.out)
            _log.info("wrote %s (K=%d, D=%d, inertia per frame %.6g)", args.out, model.n_clusters, model.dim,
                      model.inertia / max(model.n_samples, 1))
    finally:
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    return 0


def _info(args: argparse.Namespace) -> int:
    from speechssl.cluster.model import KMeansModel

    m = KMeansModel.load(args.model)
    print(json.dumps({"n_clusters": m.n_clusters, "dim": m.dim, "inertia": m.inertia, "n_samples": m.n_samples,
                      "n_iter": m.n_iter, "converged": m.converged, "seed": m.seed, "feature": m.feature,
                      **m.extra}, indent=2))
    return 0


def main(args: argparse.Namespace) -> int:
    return _fit(args) if args.kmeans_cmd == "fit" else _info(args)
