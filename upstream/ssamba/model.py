"""SSAMBA (Shams et al., 2024): the upstream encoder (:class:`SsambaModel`) and its pretraining head.

Data flow::

    wav (B, S) ─ fbank (128 mel, 10 ms) ─ (x - mean) / (2 std) ─▶ (B, T, F)
      ─ 16×16 patches (Conv2d, stride = kernel), time-major ─▶ (B, T'·F', D)   T' = ceil(T / 16), F' = F / 16
      ─ [pretraining: masked patches ← mask_embed] ─ [CLS] + position embeddings
      ─ bidirectional Mamba blocks × depth ─ final norm ─▶ tokens (B, C + T'·F', D)

Upstream outputs are frame-level: the tokens of one time step (its ``F'`` frequency rows) are
averaged, giving ``T'`` frames of ``patch_time`` fbank frames each, i.e. ``downsample_rate =
patch_time * 160`` samples (2560 samples = 160 ms for 16×16 patches; 320 samples = 20 ms for
SSAST's 128×2 frame patches, where ``F' = 1`` and frames map one to one). CLS tokens are dropped
from the frames; ``pooled`` is the mean of the final normalised patch tokens (SSAMBA's
``finetuningavgtok`` pooling).

Padding never changes an utterance's outputs: fbank frames past an utterance's end are zeroed
after normalisation (so its last, partial patch is completed exactly as when it is alone),
tokens are time-major so padding is a suffix, and each block's backward scan reverses every
sequence within its own length.

Parameter names follow SSAMBA/Vim where they correspond (``patch_embed`` ≙ ``v.patch_embed.proj``,
``cls_token``, ``pos_embed``, ``layers.{i}.mixer.{in_proj,conv1d,conv1d_b,x_proj_b,A_b_log,...}``,
``layers.{i}.norm``, ``norm_f``, ``mask_embed``, ``cpredlayer``, ``gpredlayer``).
"""
from __future__ import annotations

import math
from typing import Sequence, TypedDict

import torch
from torch import nn
from torch.nn import functional as F

from speechssl.features import fbank
from speechssl.nn.lengths import pad_waveforms, padding_mask, patch_count, window_frames
from speechssl.nn.losses import info_nce, masked_mse
from speechssl.nn.ssm.mamba import MambaBlock
from speechssl.registry import UpstreamOutput
from speechssl.upstream.ssamba.config import FRAME_SHIFT_SAMPLES, SsambaConfig

__all__ = ["SsambaModel", "SsambaEncoding", "SsambaPretrainModel", "SsambaPretrainOutput", "sample_patch_mask"]

_FBANK_WINDOW = 400  # samples per fbank frame (25 ms); shorter inputs give no frames


class SsambaEncoding(TypedDict):
    """Token-level encoding of a padded batch (see :meth:`SsambaModel.encode_features`)."""

    hidden_states: list[torch.Tensor]  # depth + 1 tensors (B, C + T'·F', D); the last one normalised
    time_patches: torch.Tensor  # (B,) valid time steps of patches T'_i
    token_lengths: torch.Tensor  # (B,) valid tokens C + T'_i·F'
    targets: torch.Tensor  # (B, T'·F', patch_dim) the normalised fbank values of each patch
    mask: torch.Tensor | None  # (B, T'·F') True on masked patches


class SsambaModel(nn.Module):
    """SSAMBA encoder: fbank patches → bidirectional Mamba blocks (the upstream).

    Attributes:
        method: ``"ssamba"``.
        downsample_rate: samples (16 kHz) per output frame, ``patch_time * 160``.
        hidden_sizes: ``D`` of each of the ``depth + 1`` hidden states.
    """

    method = "ssamba"

    def __init__(self, config: SsambaConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        D = config.embed_dim
        self.patch_embed = nn.Conv2d(1, D, kernel_size=(config.patch_freq, config.patch_time),
                                     stride=(config.patch_freq, config.patch_time))
        n_cls = config.cls_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, n_cls, D)) if n_cls else None
        self.pos_embed = nn.Parameter(torch.zeros(1, n_cls + config.max_time_patches * config.freq_patches, D))
        self.pos_drop = nn.Dropout(config.drop_rate)
        # stochastic depth rising linearly from 0 to drop_path_rate (plain floats: builds on "meta" too)
        rates = [config.drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.layers = nn.ModuleList([
            MambaBlock(D, norm=config.norm, norm_eps=config.norm_eps, drop_path=rate, d_state=config.d_state,
                       d_conv=config.d_conv, expand=config.expand, bidirectional=config.bidirectional,
                       divide_out=config.divide_out, scan_impl=config.scan_impl,
                       checkpoint=config.checkpoint_activations)
            for rate in rates])
        self.norm_f = nn.RMSNorm(D, eps=config.norm_eps) if config.norm == "rms" else nn.LayerNorm(D, eps=config.norm_eps)
        self.downsample_rate: int = config.downsample_rate
        self.hidden_sizes: list[int] = [D] * (config.depth + 1)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        # mamba-ssm's rescale_prenorm_residual: keep the residual stream's variance flat over depth
        with torch.no_grad():
            for layer in self.layers:
                layer.mixer.out_proj.weight.div_(math.sqrt(self.config.depth))

    @classmethod
    def from_config(cls, config: SsambaConfig) -> "SsambaModel":
        """A freshly initialised model."""
        return cls(config)

    # --- stages ---------------------------------------------------------------------------

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames (time steps of patches) of waveforms of ``lengths`` samples, ``(B,)`` → ``(B,)``."""
        frames = window_frames(lengths.long(), _FBANK_WINDOW, FRAME_SHIFT_SAMPLES)
        return patch_count(frames, self.config.patch_time, partial="pad")

    def compute_fbank(self, source: torch.Tensor, lengths: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms → normalised log-mel frames.

        Args:
            source: ``(B, S)`` 16 kHz samples, right-padded.
            lengths: ``(B,)`` valid samples (None: all).

        Returns:
            ``(B, T, F)`` frames, ``(x - fbank_mean) / (2 fbank_std)``, zero past each length, and
            ``(B,)`` frame lengths.
        """
        c = self.config
        if lengths is None:
            lengths = torch.full((source.shape[0],), source.shape[1], dtype=torch.long, device=source.device)
        if window_frames(source.shape[1], _FBANK_WINDOW, FRAME_SHIFT_SAMPLES) == 0:
            feats = source.new_zeros(source.shape[0], 0, c.num_mel_bins)
            return feats, torch.zeros_like(lengths)
        with torch.no_grad():
            feats, frame_lengths = fbank(source.float(), num_mel_bins=c.num_mel_bins, window=c.fbank_window,
                                         low_freq=c.fbank_low_freq, lengths=lengths)
            feats = (feats - c.fbank_mean) / (2 * c.fbank_std)
            feats = feats.masked_fill(padding_mask(frame_lengths, feats.shape[1]).unsqueeze(-1), 0.0)
        return feats, frame_lengths

    def patchify(self, feats: torch.Tensor, frame_lengths: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cut frames into patches and embed them (time-major order).

        Args:
            feats: ``(B, T, F)`` normalised frames, zero past ``frame_lengths``.
            frame_lengths: ``(B,)``.

        Returns:
            tokens ``(B, T'·F', D)``, patch values ``(B, T'·F', patch_dim)`` (the pretraining
            targets) and ``(B,)`` valid time steps ``T'_i = ceil(T_i / patch_time)``.

        Raises:
            ValueError: more frames than ``config.max_frames`` or a wrong number of mel bins.
        """
        c = self.config
        B, T, F_ = feats.shape
        if F_ != c.num_mel_bins:
            raise ValueError(f"expected {c.num_mel_bins} mel bins, got features {tuple(feats.shape)}")
        if T > c.max_frames:
            raise ValueError(f"input has {T} fbank frames ({T / 100:.1f} s) but this SSAMBA's position table "
                             f"covers max_frames={c.max_frames}; crop the audio or build the model with a "
                             "larger model.max_frames")
        pt, pf, Fp = c.patch_time, c.patch_freq, c.freq_patches
        Tp = patch_count(T, pt, partial="pad")
        feats = F.pad(feats, (0, 0, 0, Tp * pt - T))                              # (B, T'·pt, F)
        emb = self.patch_embed(feats.transpose(1, 2).unsqueeze(1))                 # (B, D, F', T')
        tokens = emb.permute(0, 3, 2, 1).reshape(B, Tp * Fp, -1)                   # (B, T'·F', D)
        targets = feats.view(B, Tp, pt, Fp, pf).permute(0, 1, 3, 4, 2).reshape(B, Tp * Fp, pf * pt)
        time_patches = patch_count(frame_lengths, pt, partial="pad")
        return tokens, targets, time_patches

    def embed(self, tokens: torch.Tensor, time_patches: torch.Tensor, mask: torch.Tensor | None = None,
              mask_token: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Masking, CLS tokens and position embeddings.

        Args:
            tokens: ``(B, T'·F', D)`` patch embeddings.
            time_patches: ``(B,)`` valid time steps.
            mask: ``(B, T'·F')`` True where ``mask_token`` replaces the patch (pretraining).
            mask_token: ``(D,)``-broadcastable learned mask embedding.

        Returns:
            ``(B, C + T'·F', D)`` and ``(B,)`` valid token counts.
        """
        B, P, _ = tokens.shape
        if mask is not None:
            if mask_token is None:
                raise ValueError("a mask needs a mask_token")
            tokens = torch.where(mask.unsqueeze(-1), mask_token.to(tokens.dtype), tokens)
        n_cls = self.config.cls_tokens
        x = tokens + self.pos_embed[:, n_cls:n_cls + P]
        if self.cls_token is not None:
            cls = (self.cls_token + self.pos_embed[:, :n_cls]).expand(B, -1, -1)
            x = torch.cat([cls, x], dim=1)
        return self.pos_drop(x), n_cls + time_patches * self.config.freq_patches

    def encode(self, x: torch.Tensor, token_lengths: torch.Tensor) -> list[torch.Tensor]:
        """Run the Mamba stack: ``[input, block 1, ..., norm_f(block depth)]``, each ``(B, C + T'·F', D)``."""
        hidden = [x]
        for i, layer in enumerate(self.layers):
            x = layer(x, token_lengths)
            hidden.append(self.norm_f(x) if i == len(self.layers) - 1 else x)
        return hidden

    def encode_features(self, feats: torch.Tensor, frame_lengths: torch.Tensor, mask: torch.Tensor | None = None,
                        mask_token: torch.Tensor | None = None) -> SsambaEncoding:
        """Normalised frames → token-level hidden states (see :class:`SsambaEncoding`)."""
        tokens, targets, time_patches = self.patchify(feats, frame_lengths)
        x, token_lengths = self.embed(tokens, time_patches, mask, mask_token)
        return {"hidden_states": self.encode(x, token_lengths), "time_patches": time_patches,
                "token_lengths": token_lengths, "targets": targets, "mask": mask}

    def to_frames(self, hidden: torch.Tensor, time_patches: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, C + T'·F', D)`` → frames ``(B, T', D)``: mean over frequency rows, padding zeroed."""
        n_cls, Fp = self.config.cls_tokens, self.config.freq_patches
        B, _, D = hidden.shape
        frames = hidden[:, n_cls:].reshape(B, -1, Fp, D).mean(2)                  # (B, T', D)
        return frames.masked_fill(padding_mask(time_patches, frames.shape[1]).unsqueeze(-1), 0.0)

    def extract_features(self, source: torch.Tensor, lengths: torch.Tensor | None = None) -> UpstreamOutput:
        """Padded waveforms ``(B, S)`` (+ ``(B,)`` lengths) → the upstream dict (see :meth:`forward`)."""
        if source.dim() != 2:
            raise ValueError(f"expected waveforms (B, S), got shape {tuple(source.shape)}")
        feats, frame_lengths = self.compute_fbank(source, lengths)
        B, D = source.shape[0], self.config.embed_dim
        if feats.shape[1] == 0:
            empty = source.new_zeros(B, 0, D)
            return {"hidden_states": [empty] * len(self.hidden_sizes), "last_hidden_state": empty,
                    "lengths": torch.zeros_like(frame_lengths), "pooled": source.new_zeros(B, D)}
        enc = self.encode_features(feats, frame_lengths)
        tp = enc["time_patches"]
        frames = [self.to_frames(h, tp) for h in enc["hidden_states"]]
        # mean of the valid patch tokens = mean of the valid frames (each frame averages F' tokens)
        count = tp.clamp(min=1).unsqueeze(-1).to(frames[-1].dtype)
        pooled = frames[-1].sum(1) / count
        return {"hidden_states": frames, "last_hidden_state": frames[-1], "lengths": tp, "pooled": pooled}

    # --- upstream contract -------------------------------------------------------------------

    def forward(self, wavs: Sequence[torch.Tensor]) -> UpstreamOutput:
        """Encode a list of waveforms (the upstream contract).

        Args:
            wavs: ``B`` float tensors ``(S_i,)`` at 16 kHz. Waveforms shorter than one fbank
                window (400 samples) give 0 frames.

        Returns:
            ``hidden_states``: ``depth + 1`` tensors ``(B, T', D)`` (input of block 1, then each
            block's output, the last one after the final norm); ``last_hidden_state``;
            ``lengths`` ``(B,)`` int64 valid frames; ``pooled`` ``(B, D)`` utterance embeddings.
            One frame per ``downsample_rate`` samples; padded frames are 0.
        """
        x, lengths = pad_waveforms(wavs)
        return self.extract_features(x, lengths)


def sample_patch_mask(time_patches: torch.Tensor, freq_patches: int, total_time: int, ratio: float,
                      mode: str, seeds: Sequence[int], cluster: tuple[int, int] = (3, 6)) -> torch.Tensor:
    """Choose the patches to mask, per utterance, reproducibly from ``seeds``.

    Args:
        time_patches: ``(B,)`` valid time steps ``T'_i``.
        freq_patches: ``F'``.
        total_time: ``T'`` of the batch.
        ratio: fraction of each utterance's ``T'_i·F'`` patches to mask (at least one).
        mode: ``"random"`` (uniform without replacement) or ``"cluster"`` (SSAST: square blocks
            of ``c×c`` patches, ``c`` drawn from ``[cluster[0], cluster[1])`` per utterance, until
            enough are masked; the last block is cut to the exact count).
        seeds: one int per utterance (``batch["seed"]``).

    Returns:
        ``(B, T'·F')`` bool on the CPU, time-major like the tokens.
    """
    if mode not in ("random", "cluster"):
        raise ValueError(f"mask mode must be 'random' or 'cluster', got {mode!r}")
    B = len(seeds)
    mask = torch.zeros(B, total_time * freq_patches, dtype=torch.bool)
    for b in range(B):
        tp = int(time_patches[b])
        n_valid = tp * freq_patches
        if n_valid == 0:
            continue
        count = min(n_valid, max(1, round(ratio * n_valid)))
        gen = torch.Generator().manual_seed(int(seeds[b]) % (2**63))
        if mode == "random":
            chosen = torch.randperm(n_valid, generator=gen)[:count]
        else:
            size = int(torch.randint(cluster[0], cluster[1], (1,), generator=gen))
            picked = torch.zeros(n_valid, dtype=torch.bool)
            order: list[torch.Tensor] = []
            total = 0
            while total < count:
                start = int(torch.randint(0, n_valid, (1,), generator=gen))
                t0, f0 = divmod(start, freq_patches)
                ts = torch.arange(t0, min(t0 + size, tp))
                fs = torch.arange(f0, min(f0 + size, freq_patches))
                block = (ts[:, None] * freq_patches + fs[None, :]).flatten()
                new = block[~picked[block]]
                picked[new] = True
                order.append(new)
                total += len(new)
            chosen = torch.cat(order)[:count]
        mask[b, chosen] = True
    return mask


class SsambaPretrainOutput(TypedDict):
    """What :meth:`SsambaPretrainModel.forward` returns (sums over the masked patches of the batch)."""

    nce: torch.Tensor  # InfoNCE, summed over masked patches
    mse: torch.Tensor  # per-patch mean squared error of the reconstruction, summed over masked patches
    correct: torch.Tensor  # masked patches whose prediction picks its own patch among the utterance's
    num_masked: torch.Tensor  # number of masked patches


class SsambaPretrainModel(nn.Module):
    """SSAMBA/SSAST masked patch modelling: the upstream plus a mask embedding and two heads.

    ``cpredlayer`` (discriminative) maps each masked position's output to the patch space and
    must pick its own patch among all masked patches of the utterance (InfoNCE, SSAST eq. 1);
    ``gpredlayer`` (generative) reconstructs the patch (MSE). Both heads read the same masked
    forward pass (SSAST runs one pass per objective with independent masks; one pass halves the
    cost).

    Args:
        config: the encoder.
        mask_ratio: fraction of each utterance's patches to mask.
        mask_mode: ``"cluster"`` or ``"random"`` (see :func:`sample_patch_mask`).
        cluster: range of the cluster size ``c``.
    """

    def __init__(self, config: SsambaConfig, mask_ratio: float = 0.75, mask_mode: str = "cluster",
                 cluster: tuple[int, int] = (3, 6)) -> None:
        super().__init__()
        if not 0.0 < mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
        if mask_mode not in ("random", "cluster"):
            raise ValueError(f"mask_mode must be 'random' or 'cluster', got {mask_mode!r}")
        if not 1 <= cluster[0] < cluster[1]:
            raise ValueError(f"cluster must be a range (low, high) with 1 <= low < high, got {cluster}")
        self.upstream = SsambaModel(config)
        self.mask_ratio = mask_ratio
        self.mask_mode = mask_mode
        self.cluster = cluster
        D, P = config.embed_dim, config.patch_dim
        self.mask_embed = nn.Parameter(nn.init.xavier_normal_(torch.zeros(1, 1, D)))
        self.cpredlayer = nn.Sequential(nn.Linear(D, D), nn.ReLU(), nn.Linear(D, P))
        self.gpredlayer = nn.Sequential(nn.Linear(D, D), nn.ReLU(), nn.Linear(D, P))

    def forward(self, source: torch.Tensor, lengths: torch.Tensor, seeds: Sequence[int]) -> SsambaPretrainOutput:
        """Mask, encode and score one batch.

        Args:
            source: ``(B, S)`` 16 kHz samples, right-padded.
            lengths: ``(B,)`` valid samples.
            seeds: one int per utterance, drawing its mask.
        """
        up = self.upstream
        feats, frame_lengths = up.compute_fbank(source, lengths)
        tokens, targets, time_patches = up.patchify(feats, frame_lengths)
        mask = sample_patch_mask(time_patches.cpu(), up.config.freq_patches, tokens.shape[1] // up.config.freq_patches,
                                 self.mask_ratio, self.mask_mode, seeds, self.cluster).to(tokens.device)
        x, token_lengths = up.embed(tokens, time_patches, mask, self.mask_embed)
        out = up.encode(x, token_lengths)[-1][:, up.config.cls_tokens:]            # (B, T'·F', D)
        h = out[mask]                                                              # (M, D), batch-major
        target = targets[mask].to(h.dtype)                                         # (M, P)
        pred_c = self.cpredlayer(h)
        pred_g = self.gpredlayer(h)
        counts = mask.sum(1).tolist()
        nce = self.mask_embed.sum() * 0.0        # stays connected to the graph when nothing is masked
        correct = h.new_zeros(())
        # InfoNCE per utterance (candidates: its own masked patches; prediction i's positive is patch i).
        # One call per utterance rather than one block-diagonal call keeps SSAST's exact numerics.
        for pc, tg in zip(pred_c.split(counts), target.split(counts)):
            if len(pc) == 0:
                continue
            own = torch.eye(len(pc), dtype=torch.bool, device=pc.device)
            scored = info_nce(pc, tg, own)
            nce = nce + scored.loss
            correct = correct + scored.correct
        mse = masked_mse(pred_g, target).loss   # per-patch mean squared error, summed over masked patches
        return {"nce": nce, "mse": mse, "correct": correct.detach(),
                "num_masked": torch.tensor(int(mask.sum()), device=h.device)}
