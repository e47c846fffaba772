"""UMD (Hansen-Estruch et al., 2024, "Unified Auto-Encoding with Masked Diffusion"): the ViT
upstream and the masked-diffusion pretraining model.

* :class:`UMDModel` — the upstream: ``images (B, C, H, W)`` in ``[0, 1]`` → the image upstream
  contract (``[cls] + patches`` tokens per layer, ``lengths``, ``patch_grid``) of the encoder on
  the whole, un-noised image at the "no noise" step (timestep index 0), no masking.
* :class:`UMDPretrainModel` — UMD. Pixels live in ``[-1, 1]`` (``x_0 = 2·image - 1``). Each row
  of a batch is either

  * a **clean** row (UMD's extra ``t = 0`` step): the encoder sees the un-noised image with
    ``mask_ratio_clean`` of its patches removed (UMD: 0.75) and timestep index 0; or
  * a **noisy** row: ``x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 - ᾱ_t)·ε`` (:class:`speechssl.nn.diffusion.NoiseSchedule`,
    ``t`` uniform in ``[0, T)``), ``mask_ratio_noisy`` of its patches removed (UMD: 0.375),
    timestep index ``t + 1``.

  Per row, the ``int(N·(1 - ratio))`` patches of lowest masking ``noise`` are kept
  (:func:`speechssl.nn.token_masking.random_masking`); the encoder runs on them and the class
  token, every token plus the encoder's timestep embedding; the decoder embeds that, puts a
  shared mask token at every removed patch, adds its fixed 2-D sin-cos positions and its own
  timestep embedding to every token, runs its pre-LN layers and predicts, per patch, the clean
  patch ``x̂_0`` and the noise ``ε̂`` (``2·p·p·C`` outputs, as UMD's ``2C``-channel head). The
  loss (in the task) scores ``x̂_0`` on the masked patches and ``ε̂`` on the visible ones of
  noisy rows, ``x̂_0`` on the masked patches of clean rows.

**Following UMD's released code** (``philippe-eecs/small-vision``, ``configs/ae_i1k.py``,
``trainers/train_ae.py``, ``models/ae.py``, ``gaussian_diffusion.py``): the noise enters the
*encoder* (masked patches of the noised image, time-conditioned), not only the decoder; cosine
schedule over 1000 steps for pixels; index 0 reserved for the clean step; the two masking ratios;
the two prediction heads; the loss of :mod:`.task`.

**Chosen here:** the timestep conditions every token additively (UMD's default is adaLN-Zero
modulation of every block, which the shared :mod:`speechssl.nn.transformer` layers do not
have); one class token instead of UMD's four averaged ones; fixed 2-D sin-cos positions
(MAE's) instead of learnt ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from speechssl.nn.diffusion import NoiseSchedule, TimestepEmbedding
from speechssl.nn.token_masking import keep_count, random_masking, restore_tokens
from speechssl.nn.image_backbone import ImageUpstream, masked_image_vit
from speechssl.nn.transformer import TransformerEncoder
from speechssl.nn.vit import init_vit_weights, patchify, sincos_2d_table
from speechssl.upstream.umd.config import UMDConfig

__all__ = ["UMDModel", "UMDPretrainModel", "UMDOutput", "to_diffusion_range"]


def to_diffusion_range(images: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` pixels → ``[-1, 1]`` (UMD's ``value_range(-1, 1)``), float32 ``(B, C, H, W)``."""
    return images.float() * 2.0 - 1.0


class UMDModel(ImageUpstream):
    """The UMD encoder as an upstream (see the module docstring)."""

    method = "umd"
    encoder_attr = "vit"

    def __init__(self, config: UMDConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.vit = masked_image_vit(config)
        self.time_embed = TimestepEmbedding(config.dim, 2 * config.dim, config.dim)
        init_vit_weights(self.time_embed)

    @classmethod
    def from_config(cls, config: UMDConfig) -> "UMDModel":
        return cls(config)

    def encode(self, patches: torch.Tensor, step: torch.Tensor) -> list[torch.Tensor]:
        """``patches (B, K, D)`` (embedded, with positions) at timestep index ``step (B,)`` → ``[h_0 .. h_L]``,
        each ``(B, 1 + K, D)``: class token prepended, the timestep embedding added to every token."""
        seq = self.vit.with_prefix(patches)  # (B, 1 + K, D)
        seq = seq + self.time_embed(step).to(seq.dtype)[:, None, :]
        return self.vit.encode(seq)

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        """``images (B, C, H, W)`` in ``[0, 1]`` → ``{"hidden_states": [(B, 1 + N, D)] * (L + 1),
        "last_hidden_state", "lengths" (B,), "patch_grid"}`` at timestep index 0 (no noise)."""
        self.vit.check_images(images)
        step = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        states = self.encode(self.vit.embed(to_diffusion_range(images).to(images.dtype)), step)
        lengths = torch.full((images.shape[0],), states[0].shape[1], dtype=torch.long, device=images.device)
        return {"hidden_states": states, "last_hidden_state": states[-1], "lengths": lengths,
                "patch_grid": self.patch_grid}


@dataclass
class UMDOutput:
    """Per batch row (``P = p·p·C``):

    * ``pred_x0``, ``pred_eps`` ``(B, N, P)``: the decoder's clean-patch and noise predictions;
    * ``x0`` ``(B, N, P)``: the clean patches in ``[-1, 1]``; ``eps`` ``(B, N, P)``: the noise ``ε``
      the noisy rows were made with (clean rows: the drawn ``ε``, unused);
    * ``mask (B, N)`` bool, True = removed from the encoder's input;
    * ``clean (B,)`` bool: the row is a clean (``t = 0``) row.
    """

    pred_x0: torch.Tensor
    pred_eps: torch.Tensor
    x0: torch.Tensor
    eps: torch.Tensor
    mask: torch.Tensor
    clean: torch.Tensor


class UMDPretrainModel(nn.Module):
    """UMD pretraining model: :class:`UMDModel` (as ``upstream``) + the diffusion decoder.

    Args:
        config: encoder and decoder sizes.
        schedule: beta schedule of the noisy rows (``"cosine"``: UMD's for pixels; ``"linear"``).
        timesteps: ``T`` (UMD: 1000).
        mask_ratio_clean: fraction of patches removed on clean rows (UMD: 0.75).
        mask_ratio_noisy: fraction removed on noisy rows (UMD: 0.375).
    """

    def __init__(self, config: UMDConfig, *, schedule: str = "cosine", timesteps: int = 1000,
                 mask_ratio_clean: float = 0.75, mask_ratio_noisy: float = 0.375) -> None:
        super().__init__()
        self.upstream = UMDModel(config)
        n = self.upstream.vit.num_patches
        self.keep_clean, self.keep_noisy = keep_count(n, mask_ratio_clean), keep_count(n, mask_ratio_noisy)
        self.schedule = NoiseSchedule(schedule, timesteps)
        c = config
        self.decoder_embed = nn.Linear(c.dim, c.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_dim))
        table = sincos_2d_table(self.upstream.patch_grid, c.decoder_dim, order="wh").unsqueeze(0)  # (1, N, Dd)
        self.register_buffer("decoder_pos_embed", table, persistent=False)
        self.decoder_time_embed = TimestepEmbedding(c.decoder_dim, 2 * c.decoder_dim, c.decoder_dim)
        self.decoder = TransformerEncoder(c.decoder_dim, c.decoder_ffn_dim, c.decoder_layers, c.decoder_heads,
                                          dropout=c.dropout, attention_dropout=c.attention_dropout,
                                          activation_dropout=0.0, layer_norm_first=True,
                                          layer_norm_eps=c.layer_norm_eps, position="none")
        self.patch_dim = c.patch * c.patch * c.channels
        self.decoder_pred = nn.Linear(c.decoder_dim, 2 * self.patch_dim)  # [x0 | eps] per patch
        for module in (self.decoder_embed, self.decoder_time_embed, self.decoder, self.decoder_pred):
            init_vit_weights(module)
        nn.init.normal_(self.mask_token, std=0.02)

    @property
    def num_patches(self) -> int:
        return self.upstream.vit.num_patches

    def reconstruct(self, x: torch.Tensor, noise: torch.Tensor, step: torch.Tensor, keep: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One group of rows sharing a masking ratio.

        Args:
            x: ``(b, C, H, W)`` encoder input in ``[-1, 1]`` (noised or not).
            noise: ``(b, N)`` masking noise (the ``keep`` lowest are kept).
            step: ``(b,)`` timestep index (0: clean; ``t + 1``: noised at ``t``).
            keep: ``K`` patches kept.

        Returns:
            ``pred (b, N, 2P)`` (``[x̂_0 | ε̂]`` per patch) and ``mask (b, N)`` bool (True = removed).
        """
        up = self.upstream
        tokens = up.vit.embed(x)  # (b, N, D)
        kept, mask, ids_restore = random_masking(tokens, noise, keep)  # (b, K, D)
        latent = up.encode(kept, step)[-1]  # (b, 1 + K, D)
        y = self.decoder_embed(latent)  # (b, 1 + K, Dd)
        prefix = up.prefix_tokens
        body = restore_tokens(y[:, prefix:], self.mask_token, ids_restore)  # (b, N, Dd)
        body = body + self.decoder_pos_embed.to(body.dtype)
        h = torch.cat([y[:, :prefix], body], dim=1)  # (b, 1 + N, Dd); cls position is 0
        h = h + self.decoder_time_embed(step).to(h.dtype)[:, None, :]
        h = self.decoder(h)[-1]
        return self.decoder_pred(h[:, prefix:]), mask  # (b, N, 2P), (b, N)

    def forward(self, images: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                clean: torch.Tensor) -> UMDOutput:
        """UMD's two corruptions of one batch.

        Args:
            images: ``(B, C, H, W)`` in ``[0, 1]``.
            noise: ``(B, N)`` masking noise in ``[0, 1)``.
            t: ``(B,)`` int64 diffusion steps in ``[0, T)`` (read on noisy rows only).
            eps: ``(B, C, H, W)`` standard normal ``ε`` (read on noisy rows only).
            clean: ``(B,)`` bool, True for a clean (``t = 0``) row.

        Returns:
            :class:`UMDOutput`, rows in the batch's order.
        """
        up = self.upstream
        up.vit.check_images(images)
        B = images.shape[0]
        if noise.shape != (B, self.num_patches) or t.shape != (B,) or clean.shape != (B,) or eps.shape != images.shape:
            raise ValueError(f"expected noise (B, N) = {(B, self.num_patches)}, t and clean ({B},), eps "
                             f"{tuple(images.shape)}; got {tuple(noise.shape)}, {tuple(t.shape)}, "
                             f"{tuple(clean.shape)}, {tuple(eps.shape)}")
        x0 = to_diffusion_range(images).to(images.dtype)  # (B, C, H, W)
        eps = eps.to(x0.dtype)
        rows_clean = clean.nonzero().flatten()
        rows_noisy = (~clean).nonzero().flatten()
        preds, masks = [], []
        if rows_clean.numel():
            step = torch.zeros_like(rows_clean)
            p, m = self.reconstruct(x0[rows_clean], noise[rows_clean], step, self.keep_clean)
            preds.append(p)
            masks.append(m)
        if rows_noisy.numel():
            tn = t[rows_noisy].long()
            xt = self.schedule.q_sample(x0[rows_noisy], tn, eps[rows_noisy])
            p, m = self.reconstruct(xt, noise[rows_noisy], tn + 1, self.keep_noisy)
            preds.append(p)
            masks.append(m)
        order = torch.argsort(torch.cat([rows_clean, rows_noisy]))  # back to the batch's row order
        pred, mask = torch.cat(preds)[order], torch.cat(masks)[order]  # (B, N, 2P), (B, N)
        patch = up.config.patch
        return UMDOutput(pred_x0=pred[..., :self.patch_dim], pred_eps=pred[..., self.patch_dim:],
                         x0=patchify(x0.float(), patch), eps=patchify(eps.float(), patch), mask=mask, clean=clean)
