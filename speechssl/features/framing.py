"""Kaldi frame extraction: framing, window functions and per-frame processing, batched.

This is Kaldi's ``feature-window.cc`` (``FrameExtractionOptions``, ``NumFrames``,
``FirstSampleOfFrame``, ``ExtractWindow``, ``ProcessWindow``, ``FeatureWindowFunction``)
written for batches: a whole ``(B, S)`` batch is framed with one ``unfold`` and processed
with a handful of tensor operations on blocks of frames, with no loop over single frames or
utterances.

Padding never leaks into a row: with ``snip_edges=False`` Kaldi reflects the signal at its
ends, and the reflection here uses each row's own length, so a batched row equals the
single-utterance result.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from speechssl.nn.lengths import window_frames

__all__ = ["FrameOptions", "WINDOW_TYPES", "num_frames", "prepare_batch", "frame_blocks",
           "window_function", "EPSILON"]

#: Kaldi's floor before every log: ``std::numeric_limits<float>::epsilon()``.
EPSILON = float(np.finfo(np.float32).eps)

WINDOW_TYPES = ("povey", "hanning", "hamming", "sine", "rectangular", "blackman")


@dataclass(frozen=True)
class FrameOptions:
    """Kaldi's ``FrameExtractionOptions`` (same names and defaults, except ``dither=0``).

    Attributes:
        sample_rate: samples per second of the input (Kaldi ``--sample-frequency``).
        frame_length_ms: window length in milliseconds (``--frame-length``).
        frame_shift_ms: hop in milliseconds (``--frame-shift``).
        dither: standard deviation of Gaussian noise added to each frame; 0 disables it.
        preemphasis: pre-emphasis coefficient in [0, 1] (``--preemphasis-coefficient``).
        remove_dc_offset: subtract each frame's mean (``--remove-dc-offset``).
        window: one of :data:`WINDOW_TYPES` (``--window-type``).
        round_to_power_of_two: zero-pad each frame to the next power of two for the FFT.
        blackman_coeff: the constant of the generalized Blackman window.
        snip_edges: True: only frames that fit in the signal, the first starting at sample 0.
            False: ``round(S / shift)`` frames centred on multiples of the shift, with the
            signal reflected at its ends.
    """

    sample_rate: float = 16000.0
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    window: str = "povey"
    round_to_power_of_two: bool = True
    blackman_coeff: float = 0.42
    snip_edges: bool = True

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.window not in WINDOW_TYPES:
            raise ValueError(f"window must be one of {', '.join(WINDOW_TYPES)}; got {self.window!r}")
        if not 0.0 <= self.preemphasis <= 1.0:
            raise ValueError(f"preemphasis must be in [0, 1], got {self.preemphasis}")
        if self.dither < 0:
            raise ValueError(f"dither must be >= 0, got {self.dither}")
        if self.frame_shift < 1:
            raise ValueError(f"frame_shift_ms={self.frame_shift_ms} at {self.sample_rate} Hz is "
                             f"{self.frame_shift} samples; it must be at least 1")
        if self.frame_length < 2:
            raise ValueError(f"frame_length_ms={self.frame_length_ms} at {self.sample_rate} Hz is "
                             f"{self.frame_length} samples; it must be at least 2")

    @property
    def frame_length(self) -> int:
        """Window length in samples (Kaldi ``WindowSize``: truncated, not rounded)."""
        return int(self.sample_rate * 0.001 * self.frame_length_ms)

    @property
    def frame_shift(self) -> int:
        """Hop in samples (Kaldi ``WindowShift``)."""
        return int(self.sample_rate * 0.001 * self.frame_shift_ms)

    @property
    def padded_length(self) -> int:
        """FFT size: the frame length, rounded up to a power of two if asked."""
        n = self.frame_length
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n

    @property
    def frame_rate_hz(self) -> float:
        """Frames per second of the output."""
        return self.sample_rate / self.frame_shift

    def first_sample(self, frame: int) -> int:
        """Index of the first sample of ``frame`` (negative at the start when not snipping)."""
        shift = self.frame_shift
        if self.snip_edges:
            return frame * shift
        return frame * shift + shift // 2 - self.frame_length // 2


def num_frames(num_samples: torch.Tensor, opts: FrameOptions) -> torch.Tensor:
    """Frames Kaldi makes from ``num_samples`` samples (``NumFrames`` with ``flush=True``).

    :func:`speechssl.nn.lengths.window_frames` with the options' frame length, shift and
    ``snip_edges``: ``1 + (S - L) // shift`` (0 when ``S < L``) when snipping, else
    ``round(S / shift)`` (half up).

    Args:
        num_samples: ``(B,)`` integer lengths in samples.

    Returns:
        ``(B,)`` int64 frame counts.
    """
    return window_frames(torch.as_tensor(num_samples), opts.frame_length, opts.frame_shift, opts.snip_edges)


def prepare_batch(wav: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None
                  ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate a waveform (batch) and bring it to a floating ``(B, S)`` batch.

    Args:
        wav: ``(S,)`` one utterance, or ``(B, S)`` a right-padded batch. Integer samples (e.g.
            int16) are converted to float32 without rescaling.
        lengths: ``(B,)`` valid samples per row; None means every row is full.

    Returns:
        ``(wav (B, S) floating, lengths (B,) int64 on wav's device, single)`` where ``single``
        says the input was one 1-D utterance.
    """
    if not isinstance(wav, torch.Tensor):
        if isinstance(wav, np.ndarray):
            wav = torch.from_numpy(wav)
        else:
            raise TypeError(f"expected a torch.Tensor waveform, got {type(wav).__name__}")
    if not (wav.is_floating_point() or wav.dtype in (torch.int16, torch.int32, torch.int8, torch.uint8)):
        raise TypeError(f"expected a floating or integer waveform, got dtype {wav.dtype}")
    if not wav.is_floating_point():
        wav = wav.float()
    single = wav.dim() == 1
    if single:
        if lengths is not None:
            raise ValueError("lengths is only for a (B, S) batch; a 1-D waveform is one utterance")
        wav = wav.unsqueeze(0)
    elif wav.dim() != 2:
        raise ValueError(f"expected a waveform (S,) or a batch (B, S), got shape {tuple(wav.shape)}; "
                         "multi-channel audio must be mixed down first")
    batch, max_len = wav.shape
    if lengths is None:
        lens = torch.full((batch,), max_len, dtype=torch.long, device=wav.device)
    else:
        lens = torch.as_tensor(lengths, device=wav.device)
        if lens.dim() != 1 or lens.shape[0] != batch or lens.is_floating_point():
            raise ValueError(f"lengths must be an integer tensor of shape ({batch},) for a batch of "
                             f"{batch}; got {lens.dtype} of shape {tuple(lens.shape)}")
        lens = lens.long()
        if batch and (int(lens.min()) < 0 or int(lens.max()) > max_len):
            raise ValueError(f"lengths must lie in [0, {max_len}] (the padded length S); "
                             f"got min {int(lens.min())}, max {int(lens.max())}")
    if wav.dtype in (torch.float16, torch.bfloat16):
        wav = wav.float()  # FFT and logs need at least float32
    return wav, lens, single


@functools.lru_cache(maxsize=32)
def _window_cpu(kind: str, length: int, blackman_coeff: float) -> torch.Tensor:
    n = torch.arange(length, dtype=torch.float64)
    a = 2 * math.pi / (length - 1)
    if kind == "hanning":
        w = 0.5 - 0.5 * torch.cos(a * n)
    elif kind == "sine":
        w = torch.sin(0.5 * a * n)
    elif kind == "hamming":
        w = 0.54 - 0.46 * torch.cos(a * n)
    elif kind == "povey":  # a Hann window raised to 0.85: like Hamming but zero at the edges
        w = (0.5 - 0.5 * torch.cos(a * n)).pow(0.85)
    elif kind == "rectangular":
        w = torch.ones(length, dtype=torch.float64)
    elif kind == "blackman":
        w = blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)
    else:
        raise ValueError(f"window must be one of {', '.join(WINDOW_TYPES)}; got {kind!r}")
    return w


def window_function(opts: FrameOptions, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Kaldi's window of ``opts.window`` type, ``(frame_length,)`` samples."""
    # Always a copy: the cached tensor may have been made under torch.inference_mode, and
    # an inference tensor cannot take part in autograd.
    return _window_cpu(opts.window, opts.frame_length, opts.blackman_coeff).to(
        device=device, dtype=dtype, copy=True)


def _reflect(index: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Map sample indices outside ``[0, length)`` back inside by mirror reflection.

    ``-1 -> 0``, ``-2 -> 1``, ``length -> length - 1``; repeated reflections (needed only when
    a frame is longer than the signal) are a mirror with period ``2 * length``.
    """
    length = length.clamp(min=1)
    period = 2 * length
    m = torch.remainder(index, period)
    return torch.where(m >= length, period - 1 - m, m)


def frame_blocks(wav: torch.Tensor, lengths: torch.Tensor, opts: FrameOptions,
                 generator: torch.Generator | None = None, raw_energy: bool = False,
                 block_frames: int | None = None, dtype: torch.dtype | None = None
                 ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """Cut a batch into processed frames, a block of frames at a time.

    Each frame gets Kaldi's ``ProcessWindow``: dither, DC removal, pre-emphasis, window,
    zero-padding to the FFT size. Frames are made block by block so that the per-frame
    arrays of a long batch never all exist at once: on a CPU, a working set that fits the
    caches is several times faster than one pass over the whole batch.

    Args:
        wav: ``(B, S)`` floating waveforms, right-padded.
        lengths: ``(B,)`` int64 valid samples per row.
        opts: framing options.
        generator: random generator for the dither noise (on ``wav``'s device).
        raw_energy: also yield Kaldi's "raw" log energy of each frame.
        block_frames: frames per block (per row); None: all ``T`` frames in one block.
        dtype: dtype the frames are processed in (default: ``wav``'s); each block's samples
            are converted on their own, so no converted copy of the whole batch is made.

    Yields:
        ``(t0, frames, raw_log_energy)``: ``frames`` ``(B, t, N)`` are frames ``t0 .. t0+t-1``
        windowed and zero-padded to ``N = opts.padded_length``; ``raw_log_energy`` ``(B, t)``
        is the log energy after DC removal and before pre-emphasis and windowing, floored at
        :data:`EPSILON` (None unless ``raw_energy``). Frames past a row's count
        (:func:`num_frames`) are garbage; callers zero them. Nothing is yielded when ``T = 0``.
    """
    batch = wav.shape[0]
    length, shift = opts.frame_length, opts.frame_shift
    max_frames = int(num_frames(lengths, opts).max()) if batch else 0
    if max_frames == 0:
        return
    span = (max_frames - 1) * shift + length  # samples the frames of the longest row cover
    if opts.snip_edges:
        source = wav[:, :span]  # every valid frame lies inside its row
    else:
        # Gather an extended signal that starts at the first frame's first sample, each row
        # reflected at its own ends, then frame it like the snip_edges case.
        index = torch.arange(span, device=wav.device) + opts.first_sample(0)
        index = _reflect(index.unsqueeze(0), lengths.unsqueeze(1))  # (B, span)
        source = torch.gather(wav, 1, index)
    dtype = dtype or wav.dtype
    window = window_function(opts, wav.device, dtype)
    step = max_frames if block_frames is None else max(1, block_frames)
    for t0 in range(0, max_frames, step):
        count = min(step, max_frames - t0)
        # the samples this block's frames cover, in the processing dtype
        piece = source[:, t0 * shift: (t0 + count - 1) * shift + length].to(dtype)
        frames = piece.unfold(1, length, shift)  # (B, t, L), a view: no copy
        if opts.dither > 0:
            noise = torch.randn(frames.shape, generator=generator, device=frames.device, dtype=dtype)
            yield (t0, *_process_frames(frames + opts.dither * noise, opts, window, raw_energy))
            continue
        # Without dither, pre-emphasis inside a frame equals pre-emphasis of the whole signal
        # except at the frame's first sample, and removing the mean m before it equals
        # removing (1 - c) m after it. So: pre-emphasize the samples once, frame them, and
        # fix up column 0.
        emphasized = None
        if opts.preemphasis != 0.0:  # the first sample is never used
            emphasized = torch.cat([piece[:, :1], piece[:, 1:] - opts.preemphasis * piece[:, :-1]], dim=1)
            emphasized = emphasized.unfold(1, length, shift)
        yield (t0, *_process_clean(frames, emphasized, opts, window, raw_energy))


def _process_clean(frames: torch.Tensor, emphasized: torch.Tensor | None, opts: FrameOptions,
                   window: torch.Tensor, raw_energy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``ProcessWindow`` without dither, from the raw and the pre-emphasized frame views."""
    batch, count, length = frames.shape
    coeff = opts.preemphasis
    mean = frames.mean(dim=-1, keepdim=True) if opts.remove_dc_offset else None  # (B, t, 1)
    log_energy = None
    if raw_energy:
        centred = frames - mean if mean is not None else frames
        log_energy = torch.linalg.vecdot(centred, centred).clamp(min=EPSILON).log()  # (B, t)
    out = frames.new_empty((batch, count, opts.padded_length))
    out[..., length:] = 0.0
    head = out[..., :length]
    head.copy_(frames if emphasized is None else emphasized)
    first = frames[..., 0:1] if mean is None else frames[..., 0:1] - mean
    head[..., 0:1] = (1.0 - coeff) * first
    if mean is not None:
        head[..., 1:].sub_((1.0 - coeff) * mean)
    head.mul_(window)
    return out, log_energy


def _process_frames(frames: torch.Tensor, opts: FrameOptions, window: torch.Tensor, raw_energy: bool
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Kaldi's ``ProcessWindow`` frame by frame (vectorised): the path used with dither."""
    batch, count, length = frames.shape
    if opts.remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    log_energy = None
    if raw_energy:
        log_energy = torch.linalg.vecdot(frames, frames).clamp(min=EPSILON).log()
    out = frames.new_zeros((batch, count, opts.padded_length))
    head = out[..., :length]
    coeff = opts.preemphasis
    head[..., 1:] = frames[..., 1:] - coeff * frames[..., :-1]
    head[..., 0] = (1.0 - coeff) * frames[..., 0]
    head.mul_(window)
    return out, log_energy
