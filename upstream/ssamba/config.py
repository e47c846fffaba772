"""SSAMBA model configuration and size presets.

Defaults follow SSAMBA's pretraining recipe (``src/pretrain/run_mask_patch_amba.sh`` of
siavashshams/ssamba, itself SSAST's): 128-bin log-mel fbank normalised with the
AudioSet+LibriSpeech statistics, 16×16 patches, one CLS token, 24 bidirectional Mamba blocks
(Vision Mamba "v2": shared in/out projections, separate forward/backward SSMs, outputs halved),
RMSNorm, learned absolute position embeddings, stochastic depth 0.1.

Presets: :func:`nano` (tests; trains in seconds), :func:`tiny` / :func:`small` / :func:`base`
(192 / 384 / 768 wide, 24 layers, as the paper's three sizes).

Two deliberate differences from the reference implementation:

* Patches are ordered time-major (all frequency rows of time step 0, then of time step 1, ...)
  instead of SSAST's frequency-major order, so that an utterance's padding is a suffix of its
  token sequence: the scans then never carry padding into valid tokens, and a batch gives the
  same outputs as each utterance alone.
* Inputs have any length up to ``max_frames`` (the position table's size), not a fixed
  1024-frame crop; the last partial patch is completed with zeros (the normalised mean).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from speechssl.nn.lengths import patch_count

__all__ = ["SsambaConfig", "nano", "tiny", "small", "base", "PRESETS", "FRAME_SHIFT_SAMPLES"]

FRAME_SHIFT_SAMPLES = 160  # 10 ms fbank frames at 16 kHz


@dataclass
class SsambaConfig:
    """Architecture of an SSAMBA encoder (input features, patches, Mamba stack)."""

    # --- input features (speechssl.features.fbank, Kaldi-compatible) -----------------------
    num_mel_bins: int = 128  # F, mel filters
    fbank_window: Literal["hanning", "povey", "hamming"] = "hanning"  # SSAST's choice (torchaudio kaldi fbank)
    # Lowest mel edge (Hz). SSAST uses 20 Hz, where torchaudio silently leaves mel bin 3 empty
    # (512-point FFT); Kaldi and speechssl refuse empty bins, and 40 Hz is the nearest that has none.
    fbank_low_freq: float = 40.0
    fbank_mean: float = -4.2677393  # normalisation (x - mean) / (2 * std); SSAMBA's AudioSet+LibriSpeech stats
    fbank_std: float = 4.5689974
    max_frames: int = 4096  # longest input in fbank frames (10 ms); size of the position table

    # --- patches --------------------------------------------------------------------------
    patch_freq: int = 16  # mel bins per patch (fshape); 128 with patch_time=2 gives SSAST's frame patches
    patch_time: int = 16  # frames per patch (tshape); the output frame rate is 100 / patch_time Hz
    cls_tokens: int = 1  # CLS tokens prepended to the patches (0, 1 or 2 as SSAST/DeiT)

    # --- Mamba stack ----------------------------------------------------------------------
    embed_dim: int = 768  # D
    depth: int = 24  # number of bidirectional Mamba blocks
    d_state: int = 16  # N, SSM state size
    d_conv: int = 4  # causal convolution width
    expand: int = 2  # inner width = expand * D
    bidirectional: bool = True  # Vim "v2" forward + backward scans in every block
    divide_out: bool = True  # halve the sum of the two directions (Vim if_devide_out)
    norm: Literal["rms", "layer"] = "rms"  # RMSNorm or LayerNorm in the blocks and at the end
    norm_eps: float = 1e-5
    drop_rate: float = 0.0  # dropout after adding position embeddings
    drop_path_rate: float = 0.1  # stochastic depth, increasing linearly to this over the blocks
    scan_impl: Literal["auto", "ref", "chunked", "native", "fused"] = "auto"  # selective-scan implementation
    # Recompute each block's mixer in the backward pass instead of keeping its activations
    # (training only): several times less memory for long inputs, about one more forward pass.
    checkpoint_activations: bool = False

    @property
    def freq_patches(self) -> int:
        """Patches per time step (``F / patch_freq``)."""
        return self.num_mel_bins // self.patch_freq

    @property
    def patch_dim(self) -> int:
        """Values per patch (``patch_freq * patch_time``)."""
        return self.patch_freq * self.patch_time

    @property
    def max_time_patches(self) -> int:
        """Time steps of patches the position table covers."""
        return patch_count(self.max_frames, self.patch_time, partial="pad")

    @property
    def downsample_rate(self) -> int:
        """Samples (16 kHz) per output frame: one output frame per column of patches."""
        return self.patch_time * FRAME_SHIFT_SAMPLES

    def validate(self) -> None:
        """Raise ValueError naming the field when the settings cannot build a model."""
        for name in ("num_mel_bins", "patch_freq", "patch_time", "embed_dim", "depth", "d_state", "d_conv",
                     "expand", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_mel_bins % self.patch_freq:
            raise ValueError(f"num_mel_bins ({self.num_mel_bins}) must be divisible by patch_freq ({self.patch_freq})")
        if self.cls_tokens not in (0, 1, 2):
            raise ValueError(f"cls_tokens must be 0, 1 or 2, got {self.cls_tokens}")
        if self.fbank_std <= 0:
            raise ValueError(f"fbank_std must be > 0, got {self.fbank_std}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")


def nano() -> SsambaConfig:
    """A toy SSAMBA for tests and smoke runs (2 blocks of width 32; ~0.1M parameters)."""
    return SsambaConfig(embed_dim=32, depth=2, d_state=8, drop_path_rate=0.0, max_frames=2048)


def tiny() -> SsambaConfig:
    """SSAMBA-Tiny: 24 blocks of width 192."""
    return SsambaConfig(embed_dim=192, depth=24)


def small() -> SsambaConfig:
    """SSAMBA-Small: 24 blocks of width 384."""
    return SsambaConfig(embed_dim=384, depth=24)


def base() -> SsambaConfig:
    """SSAMBA-Base: 24 blocks of width 768."""
    return SsambaConfig(embed_dim=768, depth=24)


PRESETS: dict[str, Callable[[], SsambaConfig]] = {"nano": nano, "tiny": tiny, "small": small, "base": base}
