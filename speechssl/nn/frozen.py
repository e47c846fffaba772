"""Run a frozen upstream over a batch of audio: the one place that does it.

Feature dumps (:mod:`speechssl.features.dump`), the downstream feature cache, the downstream
model on a frozen upstream and (later) frozen teachers all need the same few steps: no
gradients, eval mode, the model and the audio on one device, optional autocast, optional
chunking of long audio, the valid frames of each utterance, a selection of layers. They call
:func:`run_frozen`.

It lives in :mod:`speechssl.nn`, the bottom layer, because it only needs torch and an
``nn.Module`` that follows the upstream contract (``model(list of (S_i,) waveforms) ->
{"hidden_states": [(B, T, D), ...], "lengths": (B,)}``, plus ``downsample_rate`` and
``hidden_sizes``): ``features/`` and ``train/`` (core) and ``downstream/`` can all import it
without any of them importing another, and it knows nothing of any method.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from speechssl.nn.lengths import pad_list

__all__ = ["run_frozen", "chunk_bounds", "model_device", "eval_mode"]


def model_device(model: nn.Module, default: torch.device | str = "cpu") -> torch.device:
    """The device of ``model``'s first parameter (or buffer); ``default`` for a model with neither."""
    for tensor in (next(model.parameters(), None), next(model.buffers(), None)):
        if tensor is not None:
            return tensor.device
    return torch.device(default)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Switch every submodule of ``model`` to eval mode and restore each one's own mode after."""
    modes = [(m, m.training) for m in model.modules()]
    if not any(training for _, training in modes):
        yield model
        return
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def chunk_bounds(num_samples: int, chunk: int, downsample_rate: int) -> list[int]:
    """Boundaries ``[0, b_1, ..., num_samples]`` of the chunks one long waveform is cut into.

    Chunks have ``chunk`` samples (a multiple of ``downsample_rate``, so boundaries fall on
    frame boundaries) except the last; a last piece shorter than two frames gives no frame of
    its own and may be shorter than the model's receptive field, so it joins the previous chunk
    (fairseq's ``dump_hubert_feature.py`` cuts the same way).
    """
    if chunk < downsample_rate or chunk % downsample_rate:
        raise ValueError(f"chunk={chunk} must be a positive multiple of the downsample rate {downsample_rate}")
    bounds = list(range(0, num_samples, chunk)) + [num_samples]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2 * downsample_rate:
        del bounds[-2]
    return bounds


def _as_list(wavs: Sequence[torch.Tensor] | torch.Tensor, lengths: torch.Tensor | Sequence[int] | None
             ) -> list[torch.Tensor]:
    if isinstance(wavs, torch.Tensor):
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wavs.dim() != 2:
            raise ValueError(f"expected waveforms (B, S) or a list of (S,), got shape {tuple(wavs.shape)}")
        lens = [wavs.shape[1]] * wavs.shape[0] if lengths is None else [int(n) for n in lengths]
        if len(lens) != wavs.shape[0]:
            raise ValueError(f"lengths has {len(lens)} entries for a batch of {wavs.shape[0]} waveforms")
        return [w[:n] for w, n in zip(wavs, lens)]
    if lengths is not None:
        raise ValueError("lengths is only for a padded (B, S) batch; a list already has its lengths")
    out = list(wavs)
    if not out:
        raise ValueError("expected at least one waveform, got an empty list")
    for i, w in enumerate(out):
        if not isinstance(w, torch.Tensor) or w.dim() != 1:
            raise ValueError(f"waveform {i}: expected a 1-D (S,) tensor, got "
                             f"{tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}")
    return out


def _forward(model: nn.Module, wavs: list[torch.Tensor], amp_dtype: torch.dtype | None, device: torch.device
             ) -> tuple[list[torch.Tensor], torch.Tensor]:
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    with autocast:
        out = model(wavs)
    hidden = list(out["hidden_states"])
    declared = getattr(model, "hidden_sizes", None)
    if declared is not None and len(hidden) != len(declared):
        raise RuntimeError(f"{type(model).__name__} returned {len(hidden)} hidden states but declares "
                           f"{len(declared)} (hidden_sizes)")
    return hidden, out["lengths"]


def run_frozen(model: nn.Module, wavs: Sequence[torch.Tensor] | torch.Tensor,
               lengths: torch.Tensor | Sequence[int] | None = None, *, layers: Sequence[int] | None = None,
               device: torch.device | str | None = None, amp_dtype: torch.dtype | None = None,
               max_chunk: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Hidden states of a frozen upstream for a batch of waveforms.

    The model runs without gradients (``torch.no_grad``: the outputs can feed a trained head)
    and in eval mode (each submodule's mode is restored afterwards). With ``device``, the model
    is moved there if its parameters are elsewhere (a frozen model is shared, so it stays there);
    the audio always goes to the model's device.

    Args:
        model: an upstream: ``model(list of (S_i,)) -> {"hidden_states": [(B, T, D_l)...],
            "lengths": (B,)}``; with ``max_chunk`` it also needs ``downsample_rate``.
        wavs: ``B`` waveforms ``(S_i,)`` at 16 kHz, or a right-padded ``(B, S)`` batch (with
            ``lengths``).
        lengths: ``(B,)`` valid samples of a padded batch; None: every row is full.
        layers: indices into ``hidden_states`` to return (negative count from the end); None: all.
        device: where the model runs; None: where it already is.
        amp_dtype: run under ``torch.autocast`` with this dtype (``float16``/``bfloat16``);
            None: no autocast of its own (an enclosing autocast still applies).
        max_chunk: most samples per forward pass: each longer waveform is cut by
            :func:`chunk_bounds` (``max_chunk`` rounded down to a multiple of the downsample
            rate), run chunk by chunk alone and its valid frames concatenated. Frames next to a
            chunk boundary see less context unless the receptive field equals the stride.

    Returns:
        ``(hidden_states, lengths)``: one ``(B, T, D_l)`` tensor per selected layer (in the
        model's output dtype, on its device; frames past ``lengths`` are whatever the model
        gives, zeros when chunked) and ``(B,)`` int64 valid frames, on the model's device.

    Raises:
        ValueError: bad waveforms, layers or ``max_chunk``.
        RuntimeError: the model returns a different number of hidden states than its
            ``hidden_sizes`` declare.
    """
    items = _as_list(wavs, lengths)
    if device is not None:
        device = torch.device(device)
        current = model_device(model, device)
        if current != device and not (device.type == current.type and device.index is None):
            model.to(device)
    run_device = model_device(model, device if device is not None else "cpu")
    items = [w.to(run_device) for w in items]
    with torch.no_grad(), eval_mode(model):
        if max_chunk is None:
            hidden, out_lengths = _forward(model, items, amp_dtype, run_device)
        else:
            hidden, out_lengths = _chunked(model, items, amp_dtype, run_device, max_chunk)
    if layers is not None:
        n = len(hidden)
        for l in layers:
            if not -n <= l < n:
                raise ValueError(f"layer {l} does not exist: the model returns {n} hidden states "
                                 f"(layers 0..{n - 1})")
        hidden = [hidden[l] for l in layers]
    return hidden, out_lengths


def _chunked(model: nn.Module, items: list[torch.Tensor], amp_dtype: torch.dtype | None, device: torch.device,
             max_chunk: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    if not hasattr(model, "downsample_rate"):
        raise ValueError(f"max_chunk needs the model's downsample_rate; {type(model).__name__} has none")
    rate = int(model.downsample_rate)
    if max_chunk < rate:
        raise ValueError(f"max_chunk={max_chunk} is shorter than one frame ({rate} samples)")
    chunk = max_chunk // rate * rate
    per_utt: list[list[torch.Tensor]] = []  # per utterance, per layer: (T_i, D_l)
    for wav in items:
        bounds = chunk_bounds(wav.shape[0], chunk, rate)
        pieces: list[list[torch.Tensor]] = []
        for start, stop in zip(bounds[:-1], bounds[1:]):
            hidden, n = _forward(model, [wav[start:stop]], amp_dtype, device)
            pieces.append([h[0, : int(n[0])] for h in hidden])
        per_utt.append([torch.cat(layer, dim=0) for layer in zip(*pieces)])
    states, out_lengths = [], None
    for layer in zip(*per_utt):
        padded, out_lengths = pad_list(list(layer))  # (B, T, D_l)
        states.append(padded)
    assert out_lengths is not None
    return states, out_lengths
