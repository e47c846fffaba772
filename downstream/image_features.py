"""What image probe tasks share: pooled frozen features, the raw-pixel baseline, linear and k-NN probes.

* :class:`PixelUpstream` — the raw-pixel baseline: an image is one token, its flattened
  pixels ``(B, 1, C*H*W)``; it follows the image upstream contract.
* :func:`pooled_features` — runs a frozen image upstream (no grad, eval mode, in batches) and
  pools each chosen hidden state ``(B, T, D)`` to ``(B, D)``: ``"mean"`` over the patch tokens
  (after the model's ``prefix_tokens``), ``"cls"`` the first token.
* :func:`linear_probe` — multinomial logistic regression (scikit-learn, L-BFGS, L2 ``C``) on
  features standardised with the training split's mean and std.
* :func:`knn_probe` — k nearest training neighbours by cosine similarity, majority vote (ties:
  the smallest class id among the tied, as scikit-learn).
* :func:`image_hidden_states` — runs a frozen image upstream over rows of a split in batches and
  yields ``(rows, states, lengths)`` as :func:`speechssl.downstream.cache.compute_hidden_states`
  does for audio, so the feature cache stores image tokens the same way (``compute=``).
* :func:`pixel_patch_tokens` — the pixel baseline's one token ``(B, 1, C*H*W)`` cut into
  ``p x p`` patch tokens ``(B, N, p*p*C)`` (the same layout as :func:`speechssl.nn.vit.patchify`),
  so per-patch tasks (segmentation) can read raw pixels on a patch grid.
* :func:`confusion_matrix` / :func:`segmentation_scores` — the pixel confusion matrix of a
  labelling and its mIoU, pixel accuracy and per-class IoU (classes absent from both the
  reference and the prediction are left out of the mean, as mmsegmentation's ``nanmean``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["PixelConfig", "PixelUpstream", "pooled_features", "linear_probe", "knn_probe", "POOLS",
           "image_hidden_states", "pixel_patch_tokens", "confusion_matrix", "segmentation_scores"]

POOLS = ("mean", "cls")


@dataclass
class PixelConfig:
    """Shape of the images the pixel baseline takes."""

    image_size: int = 32  # H = W
    channels: int = 3  # C


class PixelUpstream(nn.Module):
    """Raw pixels: ``images (B, C, H, W)`` → ``{"hidden_states": [(B, 1, C*H*W)], ...}`` (no parameters)."""

    method = "pixels"
    prefix_tokens = 0

    def __init__(self, config: PixelConfig | None = None) -> None:
        super().__init__()
        self.config = config or PixelConfig()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.config.channels, self.config.image_size, self.config.image_size)

    @property
    def hidden_sizes(self) -> list[int]:
        return [int(np.prod(self.input_shape))]

    @property
    def patch_grid(self) -> tuple[int, int]:
        return (1, 1)

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        if images.dim() != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(f"expected images (B, {', '.join(map(str, self.input_shape))}), got {tuple(images.shape)}")
        x = images.float().reshape(images.shape[0], 1, -1)  # (B, 1, C*H*W)
        lengths = torch.ones(images.shape[0], dtype=torch.long, device=images.device)
        return {"hidden_states": [x], "last_hidden_state": x, "lengths": lengths, "patch_grid": (1, 1)}


def _pool(h: torch.Tensor, pool: str, prefix: int) -> torch.Tensor:
    if pool == "cls":
        if prefix < 1:
            raise ValueError("pool='cls' needs an upstream with a class token (prefix_tokens >= 1); use pool='mean'")
        return h[:, 0]
    return h[:, prefix:].mean(1) if h.shape[1] > prefix else h.mean(1)


def pooled_features(model: nn.Module, batches: Iterable[torch.Tensor], layers: Sequence[int], pool: str = "mean",
                    device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """Pooled hidden states of a frozen upstream.

    Args:
        model: an image upstream (``forward(images) -> {"hidden_states": [(B, T, D)...]}``).
        batches: image batches ``(B, C, H, W)``, in order.
        layers: indices into ``hidden_states`` (negative counts from the end).
        pool: ``"mean"`` or ``"cls"`` (module docstring).
        device: where the model runs (it is moved there; its mode is restored afterwards).

    Returns:
        one ``(N, D_l)`` float32 CPU tensor per requested layer.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
    prefix = int(getattr(model, "prefix_tokens", 0))
    was_training = model.training
    model.eval().to(device)
    out: list[list[torch.Tensor]] = [[] for _ in layers]
    try:
        with torch.no_grad():
            for images in batches:
                states = model(images.to(device))["hidden_states"]
                for k, layer in enumerate(layers):
                    out[k].append(_pool(states[layer], pool, prefix).float().cpu())
    finally:
        model.train(was_training)
    return [torch.cat(parts) for parts in out]


def linear_probe(train_x: torch.Tensor, train_y: Sequence[int], test_x: torch.Tensor, *, c: float = 1.0,
                 max_iter: int = 1000) -> np.ndarray:
    """Predicted class ids of ``test_x (M, D)`` from a logistic regression fit on ``train_x (N, D)``."""
    from sklearn.linear_model import LogisticRegression

    x = train_x.double().numpy()
    mean, std = x.mean(0), x.std(0)
    std[std < 1e-8] = 1.0
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit((x - mean) / std, np.asarray(train_y))
    return clf.predict((test_x.double().numpy() - mean) / std)


def knn_probe(train_x: torch.Tensor, train_y: Sequence[int], test_x: torch.Tensor, *, k: int = 20) -> np.ndarray:
    """Predicted class ids of ``test_x`` by a majority vote of its ``k`` most cosine-similar training items."""
    from sklearn.neighbors import KNeighborsClassifier

    k = max(1, min(k, len(train_x)))
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
    clf.fit(train_x.double().numpy(), np.asarray(train_y))
    return clf.predict(test_x.double().numpy())


def image_hidden_states(model: nn.Module, load_image: Callable[[int], torch.Tensor], rows: Sequence[int],
                        layers: Sequence[int], *, batch_size: int = 64, device: str | torch.device = "cpu"
                        ) -> Iterator[tuple[list[int], list[torch.Tensor], torch.Tensor]]:
    """Hidden states of a frozen image upstream, batch by batch (no grad, eval mode, mode restored).

    Args:
        model: an image upstream (``forward(images (B, C, H, W)) -> {"hidden_states", "lengths"}``).
        load_image: ``row -> (C, H, W)`` float image of the model's ``input_shape``.
        rows: the rows to run, in order.
        layers: indices into ``hidden_states`` (non-negative).
        batch_size: images per forward.
        device: where the model runs.

    Yields:
        ``(rows, states, lengths)``: the batch's rows, one ``(B, T, D_l)`` CPU float tensor per
        requested layer, and ``(B,)`` int64 token counts.
    """
    rows = list(rows)
    bs = max(1, int(batch_size))
    was_training = model.training
    model.eval().to(device)
    try:
        with torch.no_grad():
            for s in range(0, len(rows), bs):
                chunk = rows[s:s + bs]
                out = model(torch.stack([load_image(i) for i in chunk]).to(device))
                states = [out["hidden_states"][l].float().cpu() for l in layers]
                yield chunk, states, out["lengths"].long().cpu()
    finally:
        model.train(was_training)


def pixel_patch_tokens(x: torch.Tensor, input_shape: Sequence[int], patch: int) -> torch.Tensor:
    """Cut the pixel baseline's token into patch tokens.

    Args:
        x: ``(B, 1, C*H*W)`` — :class:`PixelUpstream`'s hidden state (pixels flattened as
            ``(C, H, W)``), possibly standardised per dimension.
        input_shape: ``(C, H, W)``.
        patch: patch side ``p`` (``H`` and ``W`` multiples of it).

    Returns:
        ``(B, (H/p) * (W/p), p*p*C)``, patches row-major, each flattened as ``(row, column, channel)``.
    """
    c, h, w = (int(v) for v in input_shape)
    if x.dim() != 3 or x.shape[1] != 1 or x.shape[2] != c * h * w:
        raise ValueError(f"expected pixel tokens (B, 1, {c * h * w}), got {tuple(x.shape)}")
    if patch < 1 or h % patch or w % patch:
        raise ValueError(f"pixel patch {patch} must divide the image size {h}x{w}")
    b = x.shape[0]
    grid = x.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
    return grid.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = None) -> torch.Tensor:
    """``(K, K)`` int64 pixel counts, row = reference class, column = predicted class.

    Args:
        pred, target: integer class maps of one shape (any, e.g. ``(B, H, W)``).
        num_classes: ``K``; ids outside ``[0, K)`` in ``target`` are an error (unless ``ignore_index``).
        ignore_index: reference id whose pixels are not counted.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and reference {tuple(target.shape)} differ in shape")
    p, t = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"reference ids must be in [0, {num_classes}), found {int(t.min())}..{int(t.max())}")
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= num_classes):
        raise ValueError(f"predicted ids must be in [0, {num_classes}), found {int(p.min())}..{int(p.max())}")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores(conf: torch.Tensor, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """mIoU, pixel accuracy and per-class IoU of a confusion matrix (:func:`confusion_matrix`).

    ``IoU_k = C_kk / (Σ_j C_kj + Σ_i C_ik - C_kk)``; ``miou`` is the mean over the classes whose
    union is not empty; ``pixel_accuracy = Σ_k C_kk / Σ C``. Returns ``{"miou", "pixel_accuracy",
    "iou_<name>" ...}`` (``iou_<name>`` is NaN for a class with an empty union).
    """
    conf = conf.double()
    k = conf.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k or conf.shape != (k, k):
        raise ValueError(f"a ({len(names)}, {len(names)}) confusion matrix expected, got {tuple(conf.shape)}")
    inter = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))
    present = union > 0
    total = float(conf.sum())
    out = {"miou": float(iou[present].mean()) if bool(present.any()) else float("nan"),
           "pixel_accuracy": float(inter.sum()) / total if total else float("nan")}
    out.update({f"iou_{n}": float(v) for n, v in zip(names, iou.tolist())})
    return out
