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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["PixelConfig", "PixelUpstream", "pooled_features", "linear_probe", "knn_probe", "POOLS"]

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
