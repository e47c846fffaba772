"""Vision Transformer parts: patch embedding, 2-D sin-cos positions, patchify, and a ViT encoder.

* :func:`sincos_2d_table` — fixed 2-D sin-cos position table of a patch grid (MAE / MoCo v3).
  For a grid ``(H_p, W_p)`` and width ``D`` (divisible by 4), with ``ω_k = 1 / T^(k / (D/4))``,
  ``k = 0..D/4-1``, ``T = 10000``, the token at row ``i``, column ``j`` (row-major) gets
  ``order="hw"``: ``[sin(iω) | cos(iω) | sin(jω) | cos(jω)]``;
  ``order="wh"``: ``[sin(jω) | cos(jω) | sin(iω) | cos(iω)]`` — the layout of the released MAE
  weights (its code swapped the names of the two halves), used by :class:`VisionTransformer`
  by default. Computed in float64, returned in float32.
* :class:`PatchEmbedding` — a ``Conv2d`` with kernel = stride = patch: ``(B, C, H, W)`` →
  ``(B, N, D)`` tokens in row-major order, ``N = H_p * W_p`` from
  :func:`speechssl.nn.lengths.patch_grid`.
* :func:`patchify` / :func:`unpatchify` — ``(B, C, H, W)`` ↔ ``(B, N, p*p*C)``, each patch
  flattened as ``(row, column, channel)`` (MAE's pixel targets).
* :class:`VisionTransformer` — patch embedding + fixed (or learnt) positions + an optional
  class token + the shared pre-LN :class:`~speechssl.nn.transformer.TransformerEncoder`
  (``position="none"``: the positions are added here). ``forward(images)`` follows the image
  upstream contract.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from speechssl.nn.lengths import patch_grid
from speechssl.nn.transformer import TransformerEncoder

__all__ = ["sincos_2d_table", "PatchEmbedding", "patchify", "unpatchify", "VisionTransformer", "init_vit_weights"]


def sincos_2d_table(grid: Sequence[int], dim: int, *, order: str = "hw", temperature: float = 10000.0) -> torch.Tensor:
    """The ``(H_p * W_p, D)`` float32 2-D sin-cos table of ``grid = (H_p, W_p)`` (formula: module docstring)."""
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos table needs dim divisible by 4, got {dim}")
    if order not in ("hw", "wh"):
        raise ValueError(f"order must be 'hw' or 'wh', got {order!r}")
    gh, gw = (int(g) for g in grid)
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (D/4,)
    rows, cols = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64),
                                indexing="ij")
    a = rows.flatten().outer(omega)  # (N, D/4)
    b = cols.flatten().outer(omega)
    first, second = (a, b) if order == "hw" else (b, a)
    return torch.cat([first.sin(), first.cos(), second.sin(), second.cos()], dim=1).float()  # (N, D)


class PatchEmbedding(nn.Module):
    """Non-overlapping square patches → tokens: ``(B, C, H, W)`` → ``(B, H_p * W_p, D)``.

    Args:
        channels: ``C``.
        dim: ``D``.
        patch: patch side ``p`` in pixels (kernel and stride of ``proj``).
    """

    def __init__(self, channels: int, dim: int, patch: int) -> None:
        super().__init__()
        if patch < 1:
            raise ValueError(f"patch must be >= 1, got {patch}")
        self.channels, self.dim, self.patch = channels, dim, patch
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """``(H_p, W_p)`` of an image of ``height x width`` pixels (both multiples of ``patch``)."""
        if height % self.patch or width % self.patch:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {self.patch}")
        gh, gw = patch_grid((height, width), self.patch)
        return int(gh), int(gw)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images (B, C, H, W)`` → ``(B, N, D)``."""
        if images.dim() != 4 or images.shape[1] != self.channels:
            raise ValueError(f"expected images (B, {self.channels}, H, W), got {tuple(images.shape)}")
        self.grid(images.shape[2], images.shape[3])
        return self.proj(images).flatten(2).transpose(1, 2)  # (B, N, D)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, N, p*p*C)``, tokens row-major, each patch as ``(row, column, channel)``."""
    B, C, H, W = images.shape
    if H % patch or W % patch:
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {patch}")
    gh, gw = H // patch, W // patch
    x = images.reshape(B, C, gh, patch, gw, patch).permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
    return x.reshape(B, gh * gw, patch * patch * C)


def unpatchify(patches: torch.Tensor, patch: int, grid: Sequence[int], channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, N, p*p*C)`` → ``(B, C, H_p*p, W_p*p)``."""
    B, N, P = patches.shape
    gh, gw = (int(g) for g in grid)
    if N != gh * gw or P != patch * patch * channels:
        raise ValueError(f"patches {tuple(patches.shape)} do not fit grid {gh}x{gw}, patch {patch}, {channels} channels")
    x = patches.reshape(B, gh, gw, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)  # (B, C, gh, p, gw, p)
    return x.reshape(B, channels, gh * patch, gw * patch)


def init_vit_weights(module: nn.Module) -> None:
    """MAE's initialisation: Linear xavier-uniform with zero bias, LayerNorm (1, 0); patch convs as a Linear."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, PatchEmbedding):
            nn.init.xavier_uniform_(m.proj.weight.view(m.proj.weight.shape[0], -1))


class VisionTransformer(nn.Module):
    """ViT encoder over square images: tokens ``[cls] + patches`` through pre-LN transformer layers.

    Args:
        image_size: ``H = W`` in pixels (a multiple of ``patch``).
        patch: patch side ``p``.
        channels: ``C``.
        dim, ffn_dim, num_layers, num_heads: the transformer (``D``, inner width, ``L``, heads).
        cls_token: prepend a learnt class token (its position embedding is 0, as MAE).
        position: ``"sincos"`` (fixed :func:`sincos_2d_table`, a non-persistent buffer) or
            ``"learned"`` (a parameter, initialised to N(0, 0.02)).
        position_order: the sin-cos table's ``order`` (``"wh"``: MAE's released layout).
        layer_norm_eps, dropout, attention_dropout, activation_fn: of the transformer layers.

    Attributes:
        patch_grid: ``(H_p, W_p)``; ``num_patches`` = ``H_p * W_p``.
        prefix_tokens: tokens before the patches in every hidden state (1 with ``cls_token``).
    """

    def __init__(self, image_size: int, patch: int, channels: int, dim: int, ffn_dim: int, num_layers: int,
                 num_heads: int, *, cls_token: bool = True, position: str = "sincos", position_order: str = "wh",
                 layer_norm_eps: float = 1e-6, dropout: float = 0.0, attention_dropout: float = 0.0,
                 activation_fn: str = "gelu") -> None:
        super().__init__()
        if position not in ("sincos", "learned"):
            raise ValueError(f"position must be 'sincos' or 'learned', got {position!r}")
        self.image_size, self.channels, self.dim = image_size, channels, dim
        self.patch_embed = PatchEmbedding(channels, dim, patch)
        self.patch_grid = self.patch_embed.grid(image_size, image_size)
        self.num_patches = self.patch_grid[0] * self.patch_grid[1]
        self.prefix_tokens = 1 if cls_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        table = sincos_2d_table(self.patch_grid, dim, order=position_order).unsqueeze(0)  # (1, N, D)
        if position == "sincos":
            self.register_buffer("pos_embed", table, persistent=False)
        else:
            self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches, dim) * 0.02)
        self.encoder = TransformerEncoder(dim, ffn_dim, num_layers, num_heads, dropout=dropout,
                                          attention_dropout=attention_dropout, activation_dropout=0.0,
                                          activation_fn=activation_fn, layer_norm_first=True,
                                          layer_norm_eps=layer_norm_eps, position="none")
        init_vit_weights(self)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` the model takes."""
        return (self.channels, self.image_size, self.image_size)

    @property
    def num_layers(self) -> int:
        return len(self.encoder.layers)

    def check_images(self, images: torch.Tensor) -> None:
        """Raise ValueError unless ``images`` is a float ``(B, C, H, W)`` of :attr:`input_shape`."""
        if not torch.is_tensor(images) or images.dim() != 4 or tuple(images.shape[1:]) != self.input_shape:
            got = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"expected images (B, {', '.join(map(str, self.input_shape))}), got {got}")
        if not images.is_floating_point():
            raise TypeError(f"expected float images (e.g. in [0, 1]), got {images.dtype}")

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens with their positions, no class token: ``(B, C, H, W)`` → ``(B, N, D)``."""
        self.check_images(images)
        return self.patch_embed(images) + self.pos_embed.to(images.dtype)  # (B, N, D)

    def with_prefix(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prepend the class token (if any): ``(B, K, D)`` → ``(B, prefix + K, D)``."""
        if self.cls_token is None:
            return tokens
        return torch.cat([self.cls_token.to(tokens.dtype).expand(tokens.shape[0], -1, -1), tokens], dim=1)

    def encode(self, tokens: torch.Tensor, output_layer: int | None = None) -> list[torch.Tensor]:
        """Run the layers: ``(B, T, D)`` → ``[h_0 .. h_k]`` (``h_L`` after the final LayerNorm)."""
        return self.encoder(tokens, output_layer=output_layer)

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        """The image upstream contract.

        Args:
            images: ``(B, C, H, W)`` float.

        Returns:
            ``{"hidden_states": [(B, T, D)] * (L + 1), "last_hidden_state": (B, T, D),
            "lengths": (B,) int64 = T, "patch_grid": (H_p, W_p)}`` with ``T = prefix_tokens + N``
            (token 0 is the class token, then the patches row-major).
        """
        states = self.encode(self.with_prefix(self.embed(images)))
        lengths = torch.full((images.shape[0],), states[0].shape[1], dtype=torch.long, device=images.device)
        return {"hidden_states": states, "last_hidden_state": states[-1], "lengths": lengths,
                "patch_grid": self.patch_grid}
