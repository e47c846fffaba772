"""Inputs for the contract suite, one generator per ``Method.input_kind`` (:data:`speechssl.registry.INPUT_KINDS`).

Variable-length kinds (a list of B tensors) come in distinct lengths, longest first, so a
batch has padding; fixed-shape kinds (a ``(B, ...)`` tensor) read their shape from the
model's ``input_shape`` attribute (``(C, H, W)`` images, ``(C, T, H, W)`` clips). Every
input is drawn from an explicit ``torch.Generator``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["make_inputs", "split_items", "is_variable_length", "num_items", "input_sizes"]

#: kinds whose input is a list of variable-length items (padding invariance applies)
VARIABLE = ("waveform", "spectrogram", "points", "text")
#: kinds whose input is one (B, ...) tensor (batch invariance applies)
FIXED = ("image", "video")

# samples at 16 kHz: 0.8 s, 0.55 s, 0.35 s (short, for big presets: 0.4 s, 0.3 s)
_WAVE_LENGTHS = {False: (12800, 8800, 5600), True: (6400, 4800)}


def is_variable_length(kind: str) -> bool:
    return kind in VARIABLE


def _need(model: nn.Module, attr: str, kind: str) -> Any:
    value = getattr(model, attr, None)
    if value is None:
        raise AssertionError(f"{type(model).__name__} (input_kind {kind!r}) has no {attr!r} attribute; the "
                             f"contract suite reads the input shape from it")
    return value


def make_inputs(kind: str, model: nn.Module, gen: torch.Generator, *, short: bool = False) -> Any:
    """A batch of inputs of ``kind`` for ``model`` (``short``: fewer, shorter items for big models)."""
    if kind == "waveform":
        t = torch.arange(max(_WAVE_LENGTHS[short])) / 16000.0
        out = []
        for i, n in enumerate(_WAVE_LENGTHS[short]):
            tone = 0.3 * torch.sin(2 * math.pi * (220.0 * (i + 1)) * t[:n])
            out.append((tone + 0.05 * torch.randn(n, generator=gen)).float())  # (S_i,)
        return out
    if kind == "spectrogram":
        bins = int(_need(model, "num_mel_bins", kind))
        return [torch.randn(n, bins, generator=gen) for n in ((80, 55) if short else (120, 85, 50))]
    if kind == "points":
        return [torch.randn(n, 3, generator=gen) for n in ((48, 33) if short else (64, 47, 30))]
    if kind == "text":
        vocab = int(_need(model, "vocab_size", kind))
        return [torch.randint(0, vocab, (n,), generator=gen) for n in ((12, 7) if short else (16, 11, 5))]
    if kind in FIXED:
        shape = tuple(_need(model, "input_shape", kind))
        return torch.rand((2 if short else 3, *shape), generator=gen)
    raise AssertionError(f"the contract suite has no input generator for input_kind {kind!r}; add one to "
                         f"tests/contract/inputs.py")


def num_items(inputs: Any) -> int:
    return len(inputs)


def split_items(inputs: Any) -> list[Any]:
    """Each item of a batch as a batch of one."""
    if isinstance(inputs, list):
        return [[x] for x in inputs]
    return [inputs[i:i + 1] for i in range(len(inputs))]


def input_sizes(inputs: Any) -> list[int]:
    """The length of each item (samples, frames, points, tokens); fixed-shape items: their first non-channel axis."""
    if isinstance(inputs, list):
        return [int(x.shape[0]) for x in inputs]
    return [int(inputs.shape[2])] * len(inputs)
