"""``speechssl aug-complexity``: compare image augmentations by their augmentation kernel's
spectrum and complexity on a sample of a manifest, and predict which gives the better linear probe.

    speechssl aug-complexity --data corpus/scenes --labels shape,colour,count \\
        --augment simclr --augment simclr+mild --augment simclr+strong --views 32 --out aug.json

For every augmentation it draws ``--views`` views of each of ``N`` images, estimates
``P(view cell | image)`` over soft pixel-space cells centred on the un-augmented images, and
from it the kernel ``k_X``, the spectrum of ``T = k_X / N``, the complexity ``κ`` and, per label,
the invariance, the approximation error of the top-``d`` eigenspace and the bound proxy
``(1 - A_d) + κ² d / n`` (:mod:`speechssl.data.aug_kernel`, Zhai et al., ICLR 2024). The
augmentation with the smallest proxy is the predicted best for that label.

Augmentations: ``none`` (the resized image), ``simclr`` (SimCLR's view pipeline with its
CIFAR-10 settings, as ``speechssl pretrain --method simclr`` uses by default), ``mild`` /
``strong`` (random fields alone, :mod:`speechssl.data.random_field`), ``simclr+mild`` /
``simclr+strong`` (the view pipeline, then the fields: ``task.random_field=mild|strong``).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Callable

import torch

_log = logging.getLogger(__name__)

_AUGMENTS = ("none", "simclr", "mild", "strong", "simclr+mild", "simclr+strong")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0].replace("``", "") + (
        " Augmentations: none, simclr, mild, strong, simclr+mild, simclr+strong.")
    parser.add_argument("--data", type=Path, required=True,
                        help="directory with <split>.tsv image manifests and <split>.<label> files (e.g. corpus/scenes)")
    parser.add_argument("--split", default="train", help="manifest split (default train)")
    parser.add_argument("--labels", default="",
                        help="comma-separated label extensions to score (e.g. shape,colour,count); "
                             "dict.<label>.txt beside the manifest fixes the class ids when present")
    parser.add_argument("--augment", action="append", choices=_AUGMENTS, default=None,
                        help="an augmentation to analyse (repeat; default: simclr, simclr+mild, simclr+strong)")
    parser.add_argument("--size", type=int, default=32, help="view side in pixels (default 32, SimCLR tiny)")
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3), help="image channels (default 3)")
    parser.add_argument("--images", type=int, default=0, help="use the first N images (default 0: all)")
    parser.add_argument("--views", type=int, default=32, help="views M per image (default 32)")
    parser.add_argument("--feature-size", type=int, default=8,
                        help="views are area-averaged to this side before the pixel kernel (default 8)")
    parser.add_argument("--bandwidth", type=float, default=0.25,
                        help="cell width h as a multiple of the median distance between the un-augmented "
                             "images' features (default 0.25)")
    parser.add_argument("--dim", type=int, default=16, help="d: encoder dimension of the top-d eigenspace (default 16)")
    parser.add_argument("--num-labelled", type=int, default=0,
                        help="n of the estimation term k^2 d / n (default 0: the number of images)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the views (default 0)")
    parser.add_argument("--out", type=Path, default=None, help="write the full report (JSON) here")


def _augment_fn(name: str, size: int) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    from speechssl.data.augment import resized_crop
    from speechssl.data.image_augment import ViewAugment
    from speechssl.data.random_field import RandomFieldAugment, random_field_setting

    def resized(image: torch.Tensor) -> torch.Tensor:
        return resized_crop(image, (0, 0, image.shape[1], image.shape[2]), size).clamp(0.0, 1.0)

    view = ViewAugment(size=size)  # SimCLR's CIFAR-10 defaults = SimCLRTaskConfig's defaults
    parts = name.split("+")
    field = RandomFieldAugment(random_field_setting(parts[-1])) if parts[-1] in ("mild", "strong") else None

    def fn(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = view(image, generator)[0] if parts[0] == "simclr" else resized(image)
        return field(x, generator)[0] if field is not None else x

    return fn


def main(args: argparse.Namespace) -> int:
    from speechssl.data.augment import resized_crop
    from speechssl.data.aug_kernel import analyse, estimate_assignments, median_bandwidth, predict, view_features
    from speechssl.data.image import ImageDataset
    from speechssl.data.labels import LabelSpec

    manifest = args.data / f"{args.split}.tsv"
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest} (split {args.split!r} of --data)")
    for name in ("size", "views", "feature_size", "dim"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.bandwidth > 0:
        raise ValueError(f"--bandwidth must be > 0, got {args.bandwidth}")
    keys = [k for k in args.labels.split(",") if k]
    specs = []
    for key in keys:
        path, dictionary = args.data / f"{args.split}.{key}", args.data / f"dict.{key}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"label file not found: {path} (--labels {key})")
        specs.append(LabelSpec(path, "utterance", name=key, dictionary=dictionary if dictionary.is_file() else None))
    ds = ImageDataset(manifest, specs, size=args.size, augment=False, channels=args.channels)
    n = len(ds) if args.images <= 0 else min(args.images, len(ds))
    if n < 2:
        raise ValueError(f"need at least 2 images, {manifest} gives {n}")
    images = [ds.load(i) for i in range(n)]
    labels = {k: torch.tensor([int(ds.item_base(i)[k]) for i in range(n)]) for k in keys}
    if args.dim > n:
        raise ValueError(f"--dim ({args.dim}) must be <= the number of images ({n})")
    clean = torch.stack([resized_crop(x, (0, 0, x.shape[1], x.shape[2]), args.size).clamp(0, 1) for x in images])
    anchors = view_features(clean, args.feature_size)  # (N, D): one cell per image
    h = median_bandwidth(anchors, args.bandwidth)
    num_labelled = args.num_labelled if args.num_labelled > 0 else n
    names = args.augment or ["simclr", "simclr+mild", "simclr+strong"]
    _log.info("%d images of %s, %d views each, cells: %d anchors of %d features, h = %.4f", n, manifest, args.views,
              anchors.shape[0], anchors.shape[1], h)
    reports = []
    for name in names:
        assign = estimate_assignments(images, _augment_fn(name, args.size), args.views, anchors, h,
                                      args.feature_size, seed=args.seed)
        reports.append(analyse(name, assign, labels, args.dim, num_labelled))
    predictions = {k: predict(reports, k) for k in keys}
    print(f"augmentation kernel on {n} images x {args.views} views (d = {args.dim}, n = {num_labelled})")
    print("| augmentation | kappa^2 | trace | eff. dim | lambda_1..3 |")
    print("|---|---|---|---|---|")
    for r in reports:
        lam = ", ".join(f"{v:.3f}" for v in r.eigenvalues[1:4])
        print(f"| {r.name} | {r.kappa ** 2:.2f} | {r.trace:.2f} | {r.effective_dim:.2f} | {lam} |")
    for k in keys:
        print(f"\nlabel {k}: predicted best {predictions[k]}")
        print("| augmentation | invariance | approx. error 1-A_d | kappa^2 d/n | bound proxy |")
        print("|---|---|---|---|---|")
        for r in reports:
            f = r.labels[k]
            print(f"| {r.name} | {f.invariance:.3f} | {f.approximation_error:.3f} | {f.estimation_term:.3f} | "
                  f"{f.bound:.3f} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out = {"data": str(manifest), "images": n, "views": args.views, "dim": args.dim,
               "num_labelled": num_labelled, "bandwidth": h, "feature_size": args.feature_size, "seed": args.seed,
               "reports": [r.as_dict() for r in reports], "predictions": predictions}
        args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        _log.info("wrote %s", args.out)
    return 0
