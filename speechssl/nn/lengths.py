"""Length bookkeeping shared by every model: padding lists, masks and all frame/patch arithmetic.

Lengths travel beside tensors as ``(B,)`` int64 tensors and every count here is clamped at 0,
so an input too short for one frame (or patch) gives 0, never a negative number.

Every count function takes either a Python ``int`` (and returns an ``int``) or an integer
tensor of any shape (and returns an int64 tensor of that shape on the same device):

* :func:`conv_out_lengths` — one ``Conv1d``/``Conv2d``-axis (kernel, stride, padding, dilation);
* :func:`stack_out_lengths` — a stack of them (the wav2vec 2.0 / HuBERT waveform encoder), with
  :func:`stack_receptive_field` and :func:`stack_stride`;
* :func:`window_frames` — Kaldi window framing (``frame_length``, ``frame_shift``,
  ``snip_edges`` both ways), what fbank/MFCC and 10 ms frame labels use;
* :func:`patch_count`, :func:`patch_grid`, :func:`num_patches` — 1-D/2-D/3-D patching
  (spectrogram patches, image patches, video tubelets), dropping or zero-padding a partial patch.
"""
from __future__ import annotations

import math
import operator
from typing import Literal, Sequence, TypeVar, Union

import torch

__all__ = ["pad_list", "pad_waveforms", "padding_mask", "conv_out_lengths", "stack_out_lengths",
           "stack_receptive_field", "stack_stride", "window_frames", "patch_count", "patch_grid", "num_patches",
           "PartialPatch"]

#: An ``int`` or an integer tensor of lengths (any shape).
Lengths = TypeVar("Lengths", int, torch.Tensor)
IntOrTensor = Union[int, torch.Tensor]

#: What to do with a patch that sticks out past the end of an axis: ``"drop"`` it (the arithmetic
#: of a ``ConvNd`` with stride = kernel) or ``"pad"`` the axis with zeros so it is complete.
PartialPatch = Literal["drop", "pad"]


def pad_waveforms(wavs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Check and right-pad the waveforms of the upstream contract.

    Args:
        wavs: ``B`` 1-D float tensors ``(S_i,)`` (16 kHz samples), not a padded tensor.

    Returns:
        ``(B, max S_i)`` zero-padded samples and ``(B,)`` int64 lengths.

    Raises:
        TypeError: a tensor instead of a list. ValueError: an item that is not 1-D float (named).
    """
    if isinstance(wavs, torch.Tensor):
        raise TypeError("expected a list of 1-D waveforms, got a tensor; pass list(batch) or use "
                        "extract_features(source, lengths) for padded batches")
    for i, w in enumerate(wavs):
        if not isinstance(w, torch.Tensor) or w.dim() != 1 or not w.is_floating_point():
            desc = f"{w.dtype} {tuple(w.shape)}" if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"wavs[{i}]: expected a 1-D float tensor (S,) at 16 kHz, got {desc}")
    return pad_list(list(wavs))


def pad_list(tensors: Sequence[torch.Tensor], pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a list of tensors along their first dimension.

    Args:
        tensors: ``B`` tensors of shape ``(T_i, *rest)`` with equal ``rest``, dtype and device.
        pad_value: value written into the padding.

    Returns:
        padded: ``(B, max T_i, *rest)``.
        lengths: ``(B,)`` int64, the ``T_i``.

    Raises:
        ValueError: empty list, or tensors of different trailing shape, dtype or device.
    """
    if len(tensors) == 0:
        raise ValueError("expected at least one tensor, got an empty list")
    first = tensors[0]
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"item {i}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != first.dim() or t.shape[1:] != first.shape[1:]:
            raise ValueError(f"item {i}: expected shape (T, {', '.join(map(str, first.shape[1:]))}) "
                             f"like item 0, got {tuple(t.shape)}")
        if t.dtype != first.dtype or t.device != first.device:
            raise ValueError(f"item {i}: expected {first.dtype} on {first.device} like item 0, "
                             f"got {t.dtype} on {t.device}")
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.long, device=first.device)
    out = first.new_full((len(tensors), int(lengths.max()), *first.shape[1:]), pad_value)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out, lengths


def padding_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Boolean mask ``(B, T)`` that is True on *padded* positions (fairseq/PyTorch convention).

    Args:
        lengths: ``(B,)`` valid lengths.
        max_len: ``T``; defaults to ``lengths.max()``.
    """
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) >= lengths.unsqueeze(1)


# --- helpers ----------------------------------------------------------------------------------

def _as_lengths(x: IntOrTensor, name: str) -> IntOrTensor:
    """An ``int`` stays an ``int``; an integer tensor becomes int64; anything else is a TypeError."""
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{name}: expected an integer tensor of lengths, got dtype {x.dtype}")
        return x.long()
    try:
        return operator.index(x)
    except TypeError:
        raise TypeError(f"{name}: expected an int or an integer tensor, got {type(x).__name__}") from None


def _positive(value: int, name: str, minimum: int = 1) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _floordiv(x: IntOrTensor, d: int) -> IntOrTensor:
    if isinstance(x, torch.Tensor):
        return torch.div(x, d, rounding_mode="floor")
    return x // d


def _clamp0(x: IntOrTensor) -> IntOrTensor:
    if isinstance(x, torch.Tensor):
        return x.clamp(min=0)
    return max(x, 0)


# --- convolutions -----------------------------------------------------------------------------

def conv_out_lengths(lengths: Lengths, kernel: int, stride: int, padding: int = 0, dilation: int = 1) -> Lengths:
    """Output length of one convolution axis (``torch.nn.Conv1d`` arithmetic), clamped at 0.

    ``floor((L + 2 padding - dilation (kernel - 1) - 1) / stride) + 1``.

    Args:
        lengths: input lengths: an ``int`` or an integer tensor (e.g. ``(B,)``).
        kernel, stride: positive kernel size and stride.
        padding: zeros added on *each* side (``Conv1d(padding=...)``).
        dilation: kernel dilation.

    Returns:
        the output length(s): an ``int`` for an ``int``, else int64 of the input's shape.
    """
    x = _as_lengths(lengths, "lengths")
    kernel, stride = _positive(kernel, "kernel"), _positive(stride, "stride")
    padding, dilation = _positive(padding, "padding", 0), _positive(dilation, "dilation")
    return _clamp0(_floordiv(x + 2 * padding - dilation * (kernel - 1) - 1, stride) + 1)


def stack_out_lengths(lengths: Lengths, layers: Sequence[Sequence[int]], paddings: Sequence[int] | None = None,
                      dilations: Sequence[int] | None = None) -> Lengths:
    """Output length after a stack of convolutions (e.g. the wav2vec 2.0 waveform encoder).

    Each layer is clamped at 0 in turn, so a too-short input gives 0 frames.

    Args:
        lengths: input lengths in samples: an ``int`` or an integer tensor (e.g. ``(B,)``).
        layers: ``(kernel, stride)`` or ``(channels, kernel, stride)`` per layer (the last two
            entries are used), e.g. ``FAIRSEQ_CONV_LAYERS``.
        paddings: padding per layer (default 0 everywhere).
        dilations: dilation per layer (default 1 everywhere).

    Returns:
        frames: an ``int`` for an ``int``, else int64 of the input's shape.
    """
    n = len(layers)
    for name, values in (("paddings", paddings), ("dilations", dilations)):
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries but there are {n} layers")
    out = _as_lengths(lengths, "lengths")
    for i, layer in enumerate(layers):
        if len(layer) not in (2, 3):
            raise ValueError(f"layers[{i}]: expected (kernel, stride) or (channels, kernel, stride), got {layer}")
        out = conv_out_lengths(out, layer[-2], layer[-1], 0 if paddings is None else paddings[i],
                               1 if dilations is None else dilations[i])
    return out


def stack_receptive_field(layers: Sequence[Sequence[int]]) -> int:
    """Samples one output frame of an unpadded, undilated stack sees: the shortest input giving 1 frame.

    Args:
        layers: ``(kernel, stride)`` or ``(channels, kernel, stride)`` per layer.
    """
    field, jump = 1, 1
    for layer in layers:
        kernel, stride = layer[-2], layer[-1]
        field += (kernel - 1) * jump
        jump *= stride
    return field


def stack_stride(layers: Sequence[Sequence[int]]) -> int:
    """Samples between consecutive output frames of a stack (the product of strides)."""
    return math.prod(layer[-1] for layer in layers)


# --- Kaldi framing ----------------------------------------------------------------------------

def window_frames(num_samples: Lengths, frame_length: int, frame_shift: int, snip_edges: bool = True) -> Lengths:
    """Frames Kaldi cuts from ``num_samples`` samples (``feature-window.cc`` ``NumFrames``, ``flush=True``).

    * ``snip_edges=True``: only frames that fit, the first at sample 0:
      ``1 + (S - frame_length) // frame_shift`` when ``S >= frame_length``, else 0
      (a convolution with kernel ``frame_length`` and stride ``frame_shift``).
    * ``snip_edges=False``: frames centred on multiples of the shift, the signal reflected at its
      ends: ``(S + frame_shift // 2) // frame_shift`` (``S / frame_shift`` rounded half up).

    Args:
        num_samples: an ``int`` or an integer tensor (e.g. ``(B,)``) of lengths in samples.
        frame_length: window length in samples (400 for 25 ms at 16 kHz).
        frame_shift: hop in samples (160 for 10 ms at 16 kHz).
        snip_edges: Kaldi's ``--snip-edges``.

    Returns:
        frame counts, clamped at 0: an ``int`` for an ``int``, else int64 of the input's shape.
    """
    frame_length, frame_shift = _positive(frame_length, "frame_length"), _positive(frame_shift, "frame_shift")
    if snip_edges:
        return conv_out_lengths(num_samples, frame_length, frame_shift)
    x = _as_lengths(num_samples, "num_samples")
    return _clamp0(_floordiv(x + frame_shift // 2, frame_shift))


# --- patches ----------------------------------------------------------------------------------

def patch_count(length: Lengths, patch: int, stride: int | None = None, partial: PartialPatch = "drop") -> Lengths:
    """Patches along one axis of ``length`` positions, clamped at 0.

    Patches start at ``0, stride, 2 stride, ...``.

    * ``partial="drop"``: only complete patches (``ConvNd`` with kernel ``patch``):
      ``(L - patch) // stride + 1``, 0 when ``L < patch``.
    * ``partial="pad"``: the end of the axis is zero-padded to the shortest length the patches
      tile exactly, so that its last positions get a patch:
      ``ceil(max(L - patch, 0) / stride) + 1`` for ``L > 0``, 0 for ``L <= 0``; with
      ``stride = patch`` this is ``ceil(L / patch)`` (SSAMBA's time patches).

    Args:
        length: an ``int`` or an integer tensor (e.g. ``(B,)``) of axis lengths (frames, pixels).
        patch: patch size along the axis.
        stride: hop between patches; default ``patch`` (non-overlapping).
        partial: ``"drop"`` or ``"pad"``, see above.

    Returns:
        patch counts: an ``int`` for an ``int``, else int64 of the input's shape.
    """
    patch = _positive(patch, "patch")
    stride = patch if stride is None else _positive(stride, "stride")
    if partial == "drop":
        return conv_out_lengths(length, patch, stride)
    if partial != "pad":
        raise ValueError(f"partial must be 'drop' or 'pad', got {partial!r}")
    x = _as_lengths(length, "length")
    over = _clamp0(x - patch)
    count = -_floordiv(-over, stride) + 1  # ceil(over / stride) + 1
    if isinstance(x, torch.Tensor):
        return torch.where(x > 0, count, torch.zeros_like(count))
    return count if x > 0 else 0


def _per_axis(value: int | Sequence[int] | None, ndim: int, name: str) -> list[int | None]:
    if value is None or isinstance(value, int):
        return [value] * ndim
    if len(value) != ndim:
        raise ValueError(f"{name} has {len(value)} entries but sizes has {ndim} axes")
    return list(value)


def patch_grid(sizes: Sequence[IntOrTensor], patch: int | Sequence[int], stride: int | Sequence[int] | None = None,
               partial: PartialPatch | Sequence[PartialPatch] = "drop") -> tuple[IntOrTensor, ...]:
    """Patches along each axis of a 1-D, 2-D or 3-D input (:func:`patch_count` per axis).

    Examples: spectrogram ``(T, F)`` with ``(16, 16)`` patches, time padded:
    ``patch_grid((frames, 128), (16, 16), partial=("pad", "drop"))``; an image ``(H, W)`` with
    ``16`` pixel patches: ``patch_grid((224, 224), 16)``; a video ``(T, H, W)`` with ``(2, 16, 16)``
    tubelets: ``patch_grid((16, 224, 224), (2, 16, 16))``.

    Args:
        sizes: one length per axis, each an ``int`` or an integer tensor (e.g. ``(B,)``
            valid frames of a batch); tensors broadcast in :func:`num_patches`.
        patch: patch size per axis (an ``int`` for all axes).
        stride: hop per axis; default ``patch``.
        partial: ``"drop"`` or ``"pad"`` per axis (or one for all).

    Returns:
        one count per axis, each an ``int`` or an int64 tensor.
    """
    ndim = len(sizes)
    if ndim == 0:
        raise ValueError("sizes is empty; give one length per axis")
    patches = _per_axis(patch, ndim, "patch")
    strides = _per_axis(stride, ndim, "stride")
    partials = [partial] * ndim if isinstance(partial, str) else list(partial)
    if len(partials) != ndim:
        raise ValueError(f"partial has {len(partials)} entries but sizes has {ndim} axes")
    return tuple(patch_count(s, p, st, pa)  # type: ignore[arg-type]
                 for s, p, st, pa in zip(sizes, patches, strides, partials))


def num_patches(sizes: Sequence[IntOrTensor], patch: int | Sequence[int], stride: int | Sequence[int] | None = None,
                partial: PartialPatch | Sequence[PartialPatch] = "drop") -> IntOrTensor:
    """Total patches (tokens) of a 1-D/2-D/3-D input: the product of :func:`patch_grid`.

    Returns:
        an ``int`` when every size is an ``int``, else an int64 tensor (the axes' shapes broadcast).
    """
    total: IntOrTensor = 1
    for count in patch_grid(sizes, patch, stride, partial):
        total = total * count
    return total
