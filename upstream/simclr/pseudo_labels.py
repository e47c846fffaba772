"""G-SimCLR's pseudo-labels: k-means clusters of a frozen image upstream's pooled features.

G-SimCLR (Chakraborty et al., 2020) clusters the latents of a pretrained (denoising) autoencoder
and uses the clusters to keep images of one cluster from being each other's negatives. Here
any image upstream serves (a model directory, a training checkpoint or an ``nn.Module``; a
masked autoencoder such as ``mae`` is the closest to the paper's denoising autoencoder): each
image of ``<split>.tsv`` is resized to the upstream's input (no augmentation), hidden state
``layer`` is mean-pooled over its patch tokens ``(N, D)``, optionally L2-normalised, and
:func:`speechssl.cluster.kmeans.fit_kmeans` fits ``K`` centroids on ``fit_split``. Every split
gets ``<split>.<ext>`` (one cluster id a line, manifest order) and the directory
``dict.<ext>.txt`` (``0 .. K-1`` with their counts in ``fit_split``), written atomically;
:class:`~speechssl.upstream.simclr.task.SimCLRTask` reads them with ``task.negatives=pseudo_label``.

Command line::

    python -m speechssl.upstream.simclr.pseudo_labels -u MODEL_DIR --data DIR/scenes --clusters 10
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from speechssl.atomic import atomic_write_text
from speechssl.cluster.kmeans import fit_kmeans
from speechssl.data.image import ImageDataset

__all__ = ["pooled_image_features", "write_pseudo_labels", "main"]

_log = logging.getLogger(__name__)


def pooled_image_features(model: nn.Module, dataset: ImageDataset, *, layer: int = -1, batch_size: int = 64,
                          device: str | torch.device = "cpu") -> torch.Tensor:
    """``(N, D)`` float32: hidden state ``layer`` of ``model`` mean-pooled over the patch tokens of each item."""
    prefix = int(getattr(model, "prefix_tokens", 0))
    was_training = model.training
    model.eval().to(device)
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(dataset), batch_size):
                images = torch.stack([dataset[i]["image"] for i in range(start, min(start + batch_size, len(dataset)))])
                h = model(images.to(device))["hidden_states"][layer]  # (B, T, D)
                out.append((h[:, prefix:] if h.shape[1] > prefix else h).mean(1).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def write_pseudo_labels(upstream: nn.Module | str | Path, data: str | Path, splits: Sequence[str] = ("train", "valid"),
                        *, clusters: int, fit_split: str = "train", ext: str = "pseudo", layer: int = -1,
                        normalize: bool = True, batch_size: int = 64, seed: int = 0,
                        device: str | torch.device = "cpu") -> dict[str, Path]:
    """Cluster the images of ``data/<split>.tsv`` and write their pseudo-labels (module docstring).

    Args:
        upstream: an image upstream, or what :func:`speechssl.hub.load` loads.
        data: the directory with the manifests.
        splits: the splits to label (``fit_split`` is fitted on whether listed or not).
        clusters: K.
        fit_split: the split k-means is fitted on.
        ext: label file extension.
        layer: which hidden state (negative: from the end).
        normalize: L2-normalise the pooled features (cosine k-means).
        batch_size, device: of the feature pass.
        seed: of k-means.

    Returns:
        split → the label file written.
    """
    if clusters < 2:
        raise ValueError(f"clusters must be >= 2, got {clusters}")
    if not ext or "/" in ext or ext.startswith("."):
        raise ValueError(f"ext must be a plain file extension like 'pseudo', got {ext!r}")
    data = Path(data)
    if isinstance(upstream, nn.Module):
        model = upstream
    else:
        from speechssl import hub

        model = hub.load(upstream, device=device)
    shape = getattr(model, "input_shape", None)
    if shape is None or len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"the upstream must be an image upstream with a square input_shape (C, S, S), got {shape!r}")
    channels, size = int(shape[0]), int(shape[1])

    def feats(split: str) -> torch.Tensor:
        manifest = data / f"{split}.tsv"
        if not manifest.is_file():
            raise FileNotFoundError(f"manifest not found: {manifest} (split {split!r})")
        ds = ImageDataset(manifest, size=size, augment=False, crop_fraction=1.0, channels=channels,
                          check_files=True)  # every image's header against the manifest, before any work
        x = pooled_image_features(model, ds, layer=layer, batch_size=batch_size, device=device)
        return torch.nn.functional.normalize(x, dim=1) if normalize else x

    cache = {fit_split: feats(fit_split)}
    if len(cache[fit_split]) < clusters:
        raise ValueError(f"{fit_split} has {len(cache[fit_split])} images, fewer than clusters={clusters}")
    km = fit_kmeans(cache[fit_split], clusters, seed=seed, feature=f"pooled hidden state {layer}")
    _log.info("pseudo-labels: k-means K=%d on %d %s images, inertia %.4g", clusters, km.n_samples, fit_split,
              km.inertia)
    written: dict[str, Path] = {}
    counts = None
    for split in dict.fromkeys([fit_split, *splits]):
        labels = km.predict(cache[split] if split in cache else feats(split))
        if split == fit_split:
            counts = torch.bincount(labels, minlength=clusters).tolist()
        if split in splits:
            path = data / f"{split}.{ext}"
            atomic_write_text(path, "".join(f"{int(v)}\n" for v in labels.tolist()))
            written[split] = path
    atomic_write_text(data / f"dict.{ext}.txt", "".join(f"{k} {c}\n" for k, c in enumerate(counts or [])))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m speechssl.upstream.simclr.pseudo_labels``: see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m speechssl.upstream.simclr.pseudo_labels",
                                description="G-SimCLR pseudo-labels: k-means over a frozen image upstream's features")
    p.add_argument("-u", "--upstream", required=True, help="model directory or checkpoint (speechssl.hub.load)")
    p.add_argument("--data", required=True, help="directory with <split>.tsv image manifests")
    p.add_argument("--clusters", type=int, required=True, help="K")
    p.add_argument("--splits", default="train,valid", help="comma-separated splits to label")
    p.add_argument("--fit-split", default="train")
    p.add_argument("--ext", default="pseudo", help="label file extension")
    p.add_argument("--layer", type=int, default=-1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from speechssl.log import setup_logging

    setup_logging()
    splits = [s for s in args.splits.split(",") if s]
    try:
        out = write_pseudo_labels(args.upstream, args.data, splits, clusters=args.clusters, fit_split=args.fit_split,
                                  ext=args.ext, layer=args.layer, seed=args.seed)
    except (ValueError, FileNotFoundError) as exc:
        p.exit(2, f"error: {exc}\n")
    for split, path in out.items():
        _log.info("wrote %s (%s)", path, split)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
