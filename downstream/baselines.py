"""Baseline upstreams that give every table a floor: surface features and random models.

- ``fbank``, ``mfcc``, ``spectrogram``: Kaldi-compatible features from
  :mod:`speechssl.features` (100 frames per second), optionally with Δ/ΔΔ and
  per-utterance mean/variance normalisation, wrapped in the upstream contract with a single
  hidden state.
- ``random:<method>[@preset]``: a freshly initialised, never-trained copy of any registered
  method (SUPERB's "random init" floor), built from a fixed seed so every run gets the same
  weights. The preset defaults to ``base``, the size SUPERB reports; add ``@tiny`` for laptop runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import nn

from speechssl.nn.lengths import pad_list

__all__ = ["FeatureConfig", "FeatureUpstream", "random_upstream", "BASELINE_FEATURES", "DEFAULT_RANDOM_PRESET"]

BASELINE_FEATURES = ("fbank", "mfcc", "spectrogram")
DEFAULT_RANDOM_PRESET = "base"


@dataclass
class FeatureConfig:
    """A surface-feature baseline."""

    kind: Literal["fbank", "mfcc", "spectrogram"] = "fbank"
    num_mel_bins: int = 80  # fbank filters (MFCC uses Kaldi's 23 filters and 13 coefficients)
    delta_order: int = 2    # append Δ (1) or Δ and ΔΔ (2), as s3prl's baselines do; 0 for none
    # Per-utterance mean/variance normalisation (before the deltas). Off by default: the mean
    # over time of utterance-normalised features is zero, so SUPERB's mean-pooling heads would
    # see only the deltas (s3prl's normalised fbank scores ~0% on speaker identification).
    cmvn: bool = False


class FeatureUpstream(nn.Module):
    """Kaldi-style features as an upstream: ``hidden_states`` holds the one feature sequence.

    Follows the upstream contract (see :mod:`speechssl.registry`): ``forward(wavs)`` with
    ``wavs`` a list of ``(S_i,)`` tensors at 16 kHz returns ``hidden_states = [(B, T, D)]``,
    ``last_hidden_state`` and ``lengths (B,)``; frames are 10 ms (``downsample_rate = 160``).
    It has no parameters.
    """

    downsample_rate = 160

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        if config.kind not in BASELINE_FEATURES:
            raise ValueError(f"unknown feature baseline {config.kind!r}; choose one of {', '.join(BASELINE_FEATURES)}")
        if config.delta_order not in (0, 1, 2):
            raise ValueError(f"delta_order must be 0, 1 or 2, got {config.delta_order}")
        self.config = config
        self.method = config.kind
        base = {"fbank": config.num_mel_bins, "mfcc": 13, "spectrogram": 257}[config.kind]
        self.hidden_sizes = [base * (1 + config.delta_order)]

    @classmethod
    def from_config(cls, config: FeatureConfig) -> "FeatureUpstream":
        return cls(config)

    def forward(self, wavs: Sequence[torch.Tensor]) -> dict[str, object]:
        from speechssl import features

        if len(wavs) == 0:
            raise ValueError("expected at least one waveform, got an empty list")
        wav, lengths = pad_list([w.float() for w in wavs])                     # (B, S)
        kind = self.config.kind
        if kind == "fbank":
            feats, out_lengths = features.fbank(wav, num_mel_bins=self.config.num_mel_bins, lengths=lengths)
        elif kind == "mfcc":
            feats, out_lengths = features.mfcc(wav, lengths=lengths)
        else:
            feats, out_lengths = features.spectrogram(wav, lengths=lengths)     # (B, T, D)
        if self.config.cmvn:  # before the deltas, as Kaldi recipes apply apply-cmvn | add-deltas
            feats = features.cmvn(feats, out_lengths, norm_vars=True)
        if self.config.delta_order:
            feats = features.deltas(feats, order=self.config.delta_order, lengths=out_lengths)
        return {"hidden_states": [feats], "last_hidden_state": feats, "lengths": out_lengths.long()}


def random_upstream(method: str, preset: str | None = None, seed: int = 0, modality: str = "audio") -> nn.Module:
    """A randomly initialised model of a registered method, the same for the same seed.

    Args:
        method: registry name (``"hubert"``).
        preset: size preset; default :data:`DEFAULT_RANDOM_PRESET` (``"base"``).
        seed: seed of the initialisation (the global RNG is left untouched).
        modality: what the task evaluates; a method of another modality is refused.
    """
    from speechssl.registry import get_method

    spec = get_method(method)
    spec.require_modality(modality, f"the downstream runner's {modality} tasks (-u random:{method})")
    config = spec.preset(preset or DEFAULT_RANDOM_PRESET)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.build(config)
    return model.eval()
