"""Downstream batches cost 10 ms steps of audio, whatever the upstream's frame rate."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from speechssl.data.manifest import Manifest
from speechssl.data.sampler import MaxTokensBatchSampler
from downstream.task import SplitData, _Dataset


def _dataset(sizes: list[int], downsample_rate: int, crop_frames: int = 0) -> _Dataset:
    manifest = Manifest(root=Path("."), paths=[f"{i}.wav" for i in range(len(sizes))], sizes=sizes)
    return _Dataset(SplitData(manifest, list(range(len(sizes)))), None, downsample_rate,
                    load_audio=lambda i: torch.zeros(sizes[i]), crop_frames=crop_frames)


def test_upstreams_of_any_frame_rate_get_the_same_batches():
    """A 50 Hz upstream (HuBERT) and a 100 Hz one (fbank) see the same utterances per batch, so
    the same max_tokens and max_updates train their heads on the same data; the items keep their
    own upstream frame counts. (Counting upstream frames gave the 50 Hz upstream twice the
    utterances per batch.)"""
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in rng.integers(8000, 80000, 300)]  # 0.5..5 s at 16 kHz
    fbank, hubert = _dataset(sizes, 160), _dataset(sizes, 320)
    assert fbank.sizes == [-(-s // 160) for s in sizes]
    assert hubert.frames == [-(-s // 320) for s in sizes]
    assert max(abs(a - b) for a, b in zip(fbank.sizes, hubert.sizes)) <= 1
    batches = [list(MaxTokensBatchSampler(ds.sizes, 5000, shuffle=True, seed=3)) for ds in (fbank, hubert)]
    per_batch = [len(sizes) / len(b) for b in batches]
    assert abs(per_batch[0] - per_batch[1]) / per_batch[0] < 0.05, per_batch


def test_crops_are_in_upstream_frames_and_cost_their_audio():
    ds = _dataset([48000, 8000], 320, crop_frames=50)  # 3 s and 0.5 s; crop to 50 frames = 1 s
    assert ds.frames == [50, 25] and ds.sizes == [100, 50]
    item = ds[0]
    assert item["wav"].shape[0] == 50 * 320
