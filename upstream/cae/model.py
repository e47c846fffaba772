"""CAE (Chen et al., 2022, "Context Autoencoder for Self-Supervised Representation Learning"):
the ViT upstream and the context-autoencoder pretraining model.

* :class:`CAEModel` — the upstream: ``images (B, C, H, W)`` → the image upstream contract
  (``[cls] + patches`` tokens per layer, ``lengths``, ``patch_grid``); no masking.
* :class:`CAEPretrainModel` — CAE. Per image, ``mask (B, N)`` splits the ``N`` patches into
  ``K`` visible and ``M`` masked ones (the same ``M`` for every image).

  1. **Encoder** ``F`` (the upstream's ViT, class token + fixed 2-D sin-cos positions) on the
     visible patches only: ``Z_v (B, K, D)`` (class token dropped).
  2. **Latent contextual regressor** ``H``: ``M`` queries, each the shared mask token, pass
     through cross-attention layers (:class:`RegressorLayer`); queries carry the masked
     patches' positions, keys and values are ``[Z_v, queries]`` (keys with the positions of
     the visible then masked patches, values without positions), so ``Z_v`` is read but never
     updated by the regressor; a final LayerNorm gives ``Ẑ_m (B, M, D)``.
  3. **Alignment target**: the same encoder run on the masked patches alone, under
     ``torch.no_grad`` (stop-gradient, as the paper; mmpretrain's teacher with momentum 0 is
     the same thing): ``Z_m (B, M, D)``. Loss ``MSE(Ẑ_m, Z_m)`` with weight 2.
  4. **Decoder** ``G``: pre-LN self-attention layers over ``Ẑ_m`` + the masked positions only
     (it never sees the visible patches), then a linear layer to each masked patch's ``p*p*C``
     pixels.

  **Deviation from the paper**: CAE's decoder predicts the 8192-entry DALL-E tokenizer's
  token of each masked patch (cross-entropy). That tokenizer's weights cannot be downloaded
  here, so the decoder regresses the patch's pixels instead, normalised per patch (mean 0,
  unbiased variance 1, +1e-6, as MAE's ``norm_pix_loss``), with a per-patch mean squared
  error. Also not reproduced: layer scale (CAE's ``init_values=0.1``) and stochastic depth.

The losses (:func:`cae_losses`) are summed over the masked patches (``sample_size`` = ``B*M``):
``Σ_patches mean_pixels (pred - target)^2 + 2 Σ_patches mean_D (Ẑ_m - Z_m)^2``, i.e. the
paper's mean losses times the number of masked patches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from speechssl.nn.activations import get_activation
from speechssl.nn.attention import attend
from speechssl.nn.losses import masked_mse
from speechssl.nn.image_backbone import ImageUpstream, masked_image_vit
from speechssl.nn.transformer import TransformerEncoder
from speechssl.nn.vit import init_vit_weights, patchify
from speechssl.upstream.cae.config import CAEConfig

__all__ = ["CAEModel", "CAEPretrainModel", "CAEOutput", "RegressorLayer", "CAELosses", "cae_losses",
           "normalized_patches"]


class CAEModel(ImageUpstream):
    """The CAE encoder as an upstream (see the module docstring)."""

    method = "cae"
    encoder_attr = "vit"

    def __init__(self, config: CAEConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.vit = masked_image_vit(config)

    @classmethod
    def from_config(cls, config: CAEConfig) -> "CAEModel":
        return cls(config)

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        """``images (B, C, H, W)`` → ``{"hidden_states": [(B, 1 + N, D)] * (L + 1), "last_hidden_state",
        "lengths" (B,), "patch_grid"}``."""
        return self.vit(images)


class RegressorLayer(nn.Module):
    """One layer of CAE's latent contextual regressor (cross-attention from masked queries).

    ``x = q + Attn(LN_q(q + pos_q), LN_k(kv + pos_kv), LN_v(kv))``; ``x = LN(x)``;
    ``x = x + FFN(x)`` — CAE's ``RegressorBlock`` (separate LayerNorms for queries, keys and
    values; positions on queries and keys only; a LayerNorm after the attention residual).

    Args:
        dim, ffn_dim, num_heads: width, feed-forward width, heads.
        layer_norm_eps, dropout, attention_dropout, activation_fn: as the encoder's layers.
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, *, layer_norm_eps: float = 1e-6,
                 dropout: float = 0.0, attention_dropout: float = 0.0, activation_fn: str = "gelu") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.head_dim, self.attention_dropout = num_heads, dim // num_heads, attention_dropout
        self.norm_q = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.norm_k = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.norm_v = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm_out = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.fc1, self.fc2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.activation = get_activation(activation_fn)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor, pos_query: torch.Tensor,
                pos_key: torch.Tensor) -> torch.Tensor:
        """``query (B, M, D)``, ``key_value (B, K + M, D)`` and their positions → ``(B, M, D)``."""
        B, M, D = query.shape
        q = self._heads(self.q_proj(self.norm_q(query + pos_query)))
        k = self._heads(self.k_proj(self.norm_k(key_value + pos_key)))
        v = self._heads(self.v_proj(self.norm_v(key_value)))
        y = attend(q, k, v, dropout_p=self.attention_dropout if self.training else 0.0)  # (B, H, M, Dh)
        x = query + self.dropout(self.out_proj(y.transpose(1, 2).reshape(B, M, D)))
        x = self.norm_out(x)
        return x + self.dropout(self.fc2(self.activation(self.fc1(x))))


def normalized_patches(images: torch.Tensor, patch: int, normalize: bool = True) -> torch.Tensor:
    """Pixel targets ``(B, N, p*p*C)``: each patch's pixels, ``(x - mean) / sqrt(var + 1e-6)`` per patch if ``normalize``."""
    target = patchify(images.float(), patch)  # (B, N, P)
    if normalize:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1.0e-6) ** 0.5
    return target


@dataclass
class CAEOutput:
    """Per masked patch (``M`` of each image, in row-major order of the grid):

    ``pred``/``target`` ``(B, M, p*p*C)`` pixels; ``latent_pred`` (the regressor's ``Ẑ_m``) and
    ``latent_target`` (the encoder's ``Z_m``, no gradient) ``(B, M, D)``; ``mask (B, N)`` bool.
    """

    pred: torch.Tensor
    target: torch.Tensor
    latent_pred: torch.Tensor
    latent_target: torch.Tensor
    mask: torch.Tensor


class CAELosses(NamedTuple):
    """``loss = recon + align_weight * align`` (sums over the ``count`` masked patches)."""

    loss: torch.Tensor
    recon: torch.Tensor
    align: torch.Tensor
    count: int


def cae_losses(out: CAEOutput, align_weight: float = 2.0) -> CAELosses:
    """Pixel reconstruction + weighted alignment, each a per-patch mean squared error summed over the masked patches."""
    recon = masked_mse(out.pred, out.target)
    align = masked_mse(out.latent_pred, out.latent_target.detach())
    return CAELosses(recon.loss + align_weight * align.loss, recon.loss, align.loss, recon.count)


def _rows(x: torch.Tensor, select: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` tokens of each row where ``select (B, N)`` is True, in order: ``(B, N, D)`` → ``(B, count, D)``."""
    return x[select].reshape(x.shape[0], count, x.shape[-1])


class CAEPretrainModel(nn.Module):
    """CAE pretraining model: :class:`CAEModel` (as ``upstream``) + regressor + decoder (module docstring).

    Args:
        config: encoder, regressor and decoder sizes.
        norm_pix_loss: normalise each target patch.
    """

    def __init__(self, config: CAEConfig, norm_pix_loss: bool = True) -> None:
        super().__init__()
        self.upstream = CAEModel(config)
        self.norm_pix_loss = norm_pix_loss
        c = config
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.regressor = nn.ModuleList(
            RegressorLayer(c.dim, c.ffn_dim, c.heads, layer_norm_eps=c.layer_norm_eps, dropout=c.dropout,
                           attention_dropout=c.attention_dropout) for _ in range(c.regressor_layers))
        self.regressor_norm = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.decoder = TransformerEncoder(c.dim, c.ffn_dim, c.decoder_layers, c.heads, dropout=c.dropout,
                                          attention_dropout=c.attention_dropout, activation_dropout=0.0,
                                          layer_norm_first=True, layer_norm_eps=c.layer_norm_eps, position="none")
        self.head = nn.Linear(c.dim, c.patch * c.patch * c.channels)
        for module in (self.regressor, self.regressor_norm, self.decoder, self.head):
            init_vit_weights(module)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    @property
    def num_patches(self) -> int:
        return self.upstream.vit.num_patches

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> CAEOutput:
        """``images (B, C, H, W)``, ``mask (B, N)`` bool (True = masked, the same count per row) → :class:`CAEOutput`."""
        vit = self.upstream.vit
        tokens = vit.embed(images)  # (B, N, D), positions added
        B, N, D = tokens.shape
        if mask.shape != (B, N) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a ({B}, {N}) bool tensor, got {mask.dtype} {tuple(mask.shape)}")
        mask = mask.to(tokens.device)
        counts = mask.sum(1)
        M = int(counts[0])
        if not bool((counts == M).all()) or not 0 < M < N:
            raise ValueError(f"every image needs the same number of masked patches, in 1..{N - 1}; got {counts.tolist()}")
        prefix = vit.prefix_tokens
        z_visible = vit.encode(vit.with_prefix(_rows(tokens, ~mask, N - M)))[-1][:, prefix:]  # (B, K, D)
        with torch.no_grad():  # the alignment target: the encoder on the masked patches, stop-gradient
            z_masked = vit.encode(vit.with_prefix(_rows(tokens, mask, M)))[-1][:, prefix:]  # (B, M, D)
        pos = vit.pos_embed.to(tokens.dtype).expand(B, N, D)
        pos_m, pos_v = _rows(pos, mask, M), _rows(pos, ~mask, N - M)  # (B, M, D), (B, K, D)
        pos_kv = torch.cat([pos_v, pos_m], dim=1)  # (B, N, D)
        x = self.mask_token.to(tokens.dtype).expand(B, M, D)
        for layer in self.regressor:
            x = layer(x, torch.cat([z_visible, x], dim=1), pos_m, pos_kv)  # (B, M, D)
        latent_pred = self.regressor_norm(x)
        y = self.decoder(latent_pred + pos_m)[-1]  # (B, M, D), after the decoder's final LayerNorm
        pred = self.head(y)  # (B, M, p*p*C)
        target = _rows(normalized_patches(images, self.upstream.config.patch, self.norm_pix_loss), mask, M)
        return CAEOutput(pred, target, latent_pred, z_masked.detach(), mask)
