"""Data: manifests and label files, datasets of every modality, their collaters and batch samplers.

- :mod:`~speechssl.data.base`: :class:`SizedDataset` (what the Trainer batches) and per-item
  seeding from ``(seed, epoch, index)``;
- :mod:`~speechssl.data.manifest`, :mod:`~speechssl.data.labels`, :mod:`~speechssl.data.files`:
  the on-disk formats;
- datasets and collaters: audio (:mod:`~speechssl.data.dataset`, :mod:`~speechssl.data.collate`),
  text (:mod:`~speechssl.data.text`, sentencepiece), images (:mod:`~speechssl.data.image`),
  video clips (:mod:`~speechssl.data.video`), point sets (:mod:`~speechssl.data.points`), with
  seeded augmentations (:mod:`~speechssl.data.augment`, an explicit ``torch.Generator``);
- batching: :class:`MaxTokensBatchSampler` (:mod:`~speechssl.data.sampler`) and, for several
  sources, :mod:`~speechssl.data.multisource`.

The data layer imports nothing from ``speechssl.train``, ``upstream`` or ``downstream``.
Everything is imported on first use, so tools that only read manifests (corpus synthesis,
importers) don't pay for importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SizedDataset": "speechssl.data.base",
    "item_seed": "speechssl.data.base",
    "item_generator": "speechssl.data.base",
    "FormatError": "speechssl.data.manifest",
    "Manifest": "speechssl.data.manifest",
    "read_manifest": "speechssl.data.manifest",
    "write_manifest": "speechssl.data.manifest",
    "read_labels": "speechssl.data.manifest",
    "write_labels": "speechssl.data.manifest",
    "Dictionary": "speechssl.data.manifest",
    "read_dict": "speechssl.data.manifest",
    "write_dict": "speechssl.data.manifest",
    "LabelSpec": "speechssl.data.labels",
    "frame_crop": "speechssl.data.labels",
    "AudioDataset": "speechssl.data.dataset",
    "AudioCollater": "speechssl.data.collate",
    "TextDataset": "speechssl.data.text",
    "TextCollater": "speechssl.data.text",
    "train_sentencepiece": "speechssl.data.text",
    "write_file_manifest": "speechssl.data.files",
    "ImageDataset": "speechssl.data.image",
    "ImageCollater": "speechssl.data.image",
    "VideoDataset": "speechssl.data.video",
    "VideoCollater": "speechssl.data.video",
    "PointDataset": "speechssl.data.points",
    "PointCollater": "speechssl.data.points",
    "MaxTokensBatchSampler": "speechssl.data.sampler",
    "batch_by_size": "speechssl.data.sampler",
    "MultiSourceDataset": "speechssl.data.multisource",
    "MultiSourceCollater": "speechssl.data.multisource",
    "MultiSourceBatchSampler": "speechssl.data.multisource",
    "Tagged": "speechssl.data.multisource",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'speechssl.data' has no attribute {name!r}")
