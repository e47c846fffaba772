"""What every downstream task shares: data over cached features, the model, evaluation.

A task folder (``downstream/<task>/``) subclasses :class:`DownstreamTaskBase` and implements
six small methods; the base class does the rest (feature cache, featurizer, batching by
frames, the Trainer's ``Task`` contract, the evaluation loop)::

    load_split(split)            -> SplitData: manifest + one target per utterance
    build_head(in_dim)           -> nn.Module reading (B, T, D) and lengths
    collate_targets(targets)     -> dict of batched target tensors
    compute_loss(out, batch)     -> (summed loss, sample_size, summed logs)
    decode(out, batch)           -> one prediction per utterance of the batch
    score(split, predictions)    -> {"<metric>": value, ...}

A task is built as ``TaskClass(cfg, ctx)``: ``cfg`` is its own config dataclass (the
``config_cls`` of its :class:`speechssl.registry.DownstreamTask`), ``ctx`` a :class:`RunContext`
holding the upstream, data directory, featurizer choice and feature cache. Tasks that train
nothing (qbe) set ``trains = False`` and implement :meth:`DownstreamTaskBase.run_evaluation`.

The model the Trainer optimises is :class:`DownstreamModel`: featurizer + head, plus the
upstream only when it is fine-tuned. A frozen upstream is kept outside the module tree: it
is neither saved in checkpoints nor switched to training mode (layer drop stays off).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Optional

import numpy as np
import torch
from torch import nn

from speechssl.data.base import SizedDataset
from speechssl.data.manifest import Manifest, read_labels, validate_manifest
from speechssl.downstream.cache import CachedSplit, FeatureCache
from speechssl.downstream.featurizer import Featurizer, resolve_layer
from speechssl.downstream.upstreams import LoadedUpstream
from speechssl.log import progress_bar
from speechssl.nn.frozen import run_frozen
from speechssl.nn.lengths import pad_list
from speechssl.train.task import Task

__all__ = ["FeaturizerConfig", "CacheConfig", "RunContext", "SplitData", "DownstreamModel",
           "DownstreamTaskBase", "subset_split", "read_subset_labels", "class_index", "sorted_classes"]

_log = logging.getLogger(__name__)


@dataclass
class FeaturizerConfig:
    """How hidden states become one feature sequence (see :mod:`.featurizer`)."""

    layer: Optional[int] = None  # None: learned softmax-weighted sum of all layers; else this layer (0 = input)
    standardize: bool = True  # per-dimension mean/variance normalisation with training-split statistics
    normalize: bool = False  # layer-norm (no affine) each hidden state per frame (s3prl's option)
    stats_utterances: int = 1000  # utterances the statistics come from when features are not cached


@dataclass
class CacheConfig:
    """The feature cache of frozen upstreams (see :mod:`.cache`)."""

    enabled: bool = True  # False: run the upstream on every batch (always off when fine-tuning)
    dir: Optional[str] = None  # cache root; None: <expdir>/../.feature_cache
    dtype: Literal["float16", "float32"] = "float32"  # storage precision (features read back as float32)
    max_samples: int = 1_920_000  # padded audio samples per upstream batch while caching (120 s)


@dataclass
class RunContext:
    """Everything a task needs besides its own config.

    Attributes:
        upstream: the resolved upstream (frozen unless ``trainable``).
        data_dir: root of the corpus (its subsets are subfolders).
        featurizer: layer choice and normalisation.
        cache: the feature cache, or None to run the upstream on every batch.
        trainable: fine-tune the upstream with the head.
        seed: run seed (data construction that needs randomness derives from it).
        work_dir: where a task may write derived data (e.g. sd's mixtures), shared across runs.
        device: where evaluation and caching run.
        train_split: the split whose labels define class lists and vocabularies.
    """

    upstream: LoadedUpstream
    data_dir: Path
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    cache: FeatureCache | None = None
    trainable: bool = False
    seed: int = 1
    work_dir: Path | None = None
    device: str = "cpu"
    train_split: str = "train"


@dataclass
class SplitData:
    """One split of a task: the audio and one target per utterance (manifest order).

    Attributes:
        manifest: the audio.
        targets: task-specific targets, ``len(targets) == len(manifest)``.
        load_audio: optional ``i -> (S,)`` waveform; default reads the manifest's files.
        extra: anything else a task keeps per split (references, trial lists...).
    """

    manifest: Manifest
    targets: list[Any]
    load_audio: Callable[[int], torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.targets) != len(self.manifest):
            raise ValueError(f"{len(self.targets)} targets for {len(self.manifest)} utterances "
                             f"in {self.manifest.source}")


def subset_split(data_dir: Path, subset: str, split: str) -> Manifest:
    """Read ``<data_dir>/<subset>/<split>.tsv``, with an error that lists what exists."""
    path = Path(data_dir) / subset / f"{split}.tsv"
    if not path.is_file():
        there = sorted(p.name for p in path.parent.glob("*.tsv")) if path.parent.is_dir() else []
        raise FileNotFoundError(
            f"{path} not found (present: {', '.join(there) or 'nothing'}); --data must be a corpus root "
            f"with a {subset}/ subset, e.g. from 'speechssl corpus synth --preset tiny --out DIR'")
    return validate_manifest(path)  # the one manifest check (root line, duplicates, files, sample counts)


def read_subset_labels(manifest: Manifest, ext: str) -> list[str]:
    """The ``<split>.<ext>`` label file beside ``manifest``, one row per utterance."""
    assert manifest.source is not None
    path = manifest.source.with_suffix("." + ext.lstrip("."))
    return read_labels(path, expected_rows=len(manifest))


# Unit of the batch cost (``sizes``, ``max_tokens``): 10 ms of audio. Counting upstream frames
# instead gave a 50 Hz upstream twice the utterances per batch of a 100 Hz one (fbank), so with
# the same max_tokens and max_updates its head was trained on twice as much data.
_BATCH_STEP_SAMPLES = 160


class _Dataset(SizedDataset):
    """Items ``{"index", "feats" | "wav", "target"}``.

    ``frames`` are the items' lengths in upstream frames; ``sizes``, the batch cost the
    samplers read, are the same lengths in 10 ms steps of audio, whatever the upstream's frame
    rate, so that every upstream trains on the same batches. With ``crop_frames`` (training
    only), longer utterances are cut to a window of that many frames whose start is drawn from
    ``(seed, epoch, index)``, as the Trainer's contract asks.
    """

    def __init__(self, data: SplitData, cached: CachedSplit | None, downsample_rate: int,
                 load_audio: Callable[[int], torch.Tensor], crop_frames: int = 0, seed: int = 0) -> None:
        self.data, self.cached, self.load_audio = data, cached, load_audio
        self.downsample_rate, self.crop_frames, self.seed, self.epoch = downsample_rate, crop_frames, seed, 1
        if cached is not None:
            self.full = [max(int(n), 1) for n in cached.lengths]
        else:
            self.full = [max(-(-int(s) // downsample_rate), 1) for s in data.manifest.sizes]
        self.frames = [min(n, crop_frames) if crop_frames else n for n in self.full]
        self.sizes = [max(-(-n * downsample_rate // _BATCH_STEP_SAMPLES), 1) for n in self.frames]

    def __len__(self) -> int:
        return len(self.data.targets)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _start(self, i: int) -> int:
        extra = self.full[i] - self.frames[i]
        if extra <= 0:
            return 0
        return int(np.random.default_rng([self.seed, self.epoch, i]).integers(extra + 1))

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"index": i, "target": self.data.targets[i]}
        start = self._start(i)
        if self.cached is not None:
            item["feats"] = [h[start:start + self.frames[i]] for h in self.cached[i]]
        else:
            wav = self.load_audio(i)
            if self.frames[i] < self.full[i]:
                ds = self.downsample_rate
                wav = wav[start * ds:(start + self.frames[i]) * ds]
            item["wav"] = wav
        return item


class DownstreamModel(nn.Module):
    """Featurizer + head (+ the upstream when fine-tuned).

    ``forward(feats=(L, B, T, D), lengths=(B,))`` on cached features, or
    ``forward(wav=(B, S), wav_lengths=(B,))`` on audio; returns the head's output dict.
    """

    def __init__(self, featurizer: Featurizer, head: nn.Module, upstream: nn.Module | None,
                 trainable: bool) -> None:
        super().__init__()
        self.featurizer = featurizer
        self.head = head
        self.trainable = trainable
        if trainable:
            self.upstream = upstream
        else:  # outside the module tree: not saved, not optimised, never in training mode
            self._frozen = [upstream] if upstream is not None else []

    def _upstream(self) -> nn.Module:
        if self.trainable:
            return self.upstream
        if not self._frozen:
            raise RuntimeError("this model reads cached features; it has no upstream to run on audio")
        return self._frozen[0]

    def forward(self, feats: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                wav: torch.Tensor | None = None, wav_lengths: torch.Tensor | None = None) -> dict[str, Any]:
        if wav is not None:
            upstream = self._upstream()
            if self.trainable:
                out = upstream([w[:n] for w, n in zip(wav, wav_lengths.tolist())])
                feats, lengths = out["hidden_states"], out["lengths"]
            else:
                feats, lengths = run_frozen(upstream, wav, wav_lengths, device=wav.device)
            lengths = lengths.to(wav.device)
        if feats is None or lengths is None:
            raise ValueError("DownstreamModel needs feats and lengths, or wav and wav_lengths")
        x, lengths = self.featurizer(feats, lengths)
        return self.head(x, lengths)


class DownstreamTaskBase(Task):
    """Base of the downstream tasks (see the module docstring for what subclasses implement).

    Class attributes:
        name: the registry name (``"ks"``); names cache directories and progress bars.
        trains: False for tasks without a trained head (qbe).
        scored_unit: what a test score is counted over (``utterances``; asv ``trials``), so a
            report can say how many of them it rests on (:meth:`scored_items`).
        trainer_defaults: overrides of :class:`speechssl.train.config.TrainerConfig` this task
            starts from (``max_tokens`` counts 10 ms steps of audio, items x longest item,
            whatever the upstream's frame rate: every upstream trains on the same batches).
    """

    name: ClassVar[str] = ""
    trains: ClassVar[bool] = True
    scored_unit: ClassVar[str] = "utterances"
    trainer_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, cfg: Any, ctx: RunContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        # layer options index the upstream's hidden states: checked once, here, before any work,
        # for the cached and the uncached paths alike (never wrapped by negative/modulo indexing)
        self.layer: int | None = None
        if ctx.upstream is not None:
            n = ctx.upstream.num_layers
            self.layer = resolve_layer(ctx.featurizer.layer, n, "featurizer.layer")
            if isinstance(getattr(cfg, "layer", None), int):
                resolve_layer(cfg.layer, n, "task.layer")
        self._splits: dict[str, SplitData] = {}
        self._datasets: dict[str, _Dataset] = {}

    # --- what subclasses implement ---

    def load_split(self, split: str) -> SplitData:
        raise NotImplementedError

    def build_head(self, in_dim: int) -> nn.Module:
        raise NotImplementedError

    def collate_targets(self, targets: list[Any]) -> dict[str, Any]:
        raise NotImplementedError

    def compute_loss(self, out: dict[str, Any], batch: dict[str, Any]
                     ) -> tuple[torch.Tensor, float, dict[str, float]]:
        raise NotImplementedError

    def decode(self, out: dict[str, Any], batch: dict[str, Any]) -> list[Any]:
        raise NotImplementedError

    def score(self, split: str, predictions: list[Any]) -> dict[str, float]:
        raise NotImplementedError

    def scored_items(self, predictions: list[Any]) -> int:
        """How many :attr:`scored_unit` the score of ``predictions`` rests on (one per prediction)."""
        return len(predictions)

    def format_prediction(self, split: str, index: int, prediction: Any) -> str:
        """One line of ``predictions_<split>.tsv``: ``id<TAB>prediction<TAB>target``."""
        data = self.split(split)
        return f"{data.manifest.ids()[index]}\t{prediction}\t{data.targets[index]}"

    # --- data ---

    def split(self, split: str) -> SplitData:
        """The (memoised) :class:`SplitData` of ``split``."""
        if split not in self._splits:
            self._splits[split] = self.load_split(split)
        return self._splits[split]

    @property
    def uses_cache(self) -> bool:
        return self.ctx.cache is not None and not self.ctx.trainable

    def _data_layers(self) -> list[int] | None:
        """Upstream layers the data carries: all (None) unless one layer is cached alone."""
        if self.layer is None or not self.uses_cache:
            return None
        return [self.layer]

    def dataset(self, split: str) -> _Dataset:
        if split not in self._datasets:
            data = self.split(split)
            load_audio = data.load_audio or _audio_loader(data.manifest)
            cached = None
            if self.uses_cache:
                # named after the manifest's folder, so tasks reading the same split share a cache
                folder = data.manifest.source.parent.name if data.manifest.source else self.name
                label = f"{folder}-{split}"
                cached = self.ctx.cache.get(self.ctx.upstream, label, data.manifest, self._data_layers(),
                                            load_audio=load_audio)
                if len(cached) != len(data.targets):
                    raise RuntimeError(f"cache {cached.directory} has {len(cached)} utterances, "
                                       f"split {split} has {len(data.targets)}")
            crop_s = float(getattr(self.cfg, "train_crop_s", 0.0) or 0.0)
            crop = int(crop_s * 16000 / self.ctx.upstream.downsample_rate) if split == self.ctx.train_split else 0
            self._datasets[split] = _Dataset(data, cached, self.ctx.upstream.downsample_rate, load_audio,
                                             crop_frames=crop, seed=self.ctx.seed)
        return self._datasets[split]

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"index": torch.tensor([it["index"] for it in items], dtype=torch.long)}
        if "feats" in items[0]:
            layers = []
            for l in range(len(items[0]["feats"])):
                padded, lengths = pad_list([it["feats"][l] for it in items])       # (B, T, D)
                layers.append(padded)
            batch["feats"] = torch.stack(layers) if len({x.shape for x in layers}) == 1 else layers
            batch["lengths"] = lengths
        else:
            batch["wav"], batch["wav_lengths"] = pad_list([it["wav"] for it in items])  # (B, S)
        batch.update(self.collate_targets([it["target"] for it in items]))
        return batch

    # --- model ---

    def feature_dim(self) -> int:
        sizes = self.ctx.upstream.hidden_sizes
        if self.layer is not None:
            return sizes[self.layer]
        if len(set(sizes)) != 1:
            raise ValueError(f"upstream {self.ctx.upstream.name} has hidden states of sizes {sizes}: a "
                             "weighted sum needs one size; choose a layer with -o featurizer.layer=N")
        return sizes[0]

    def build_model(self) -> DownstreamModel:
        up = self.ctx.upstream
        data_layers = self._data_layers()
        if data_layers is not None:
            featurizer = Featurizer(1, layer=0, normalize=self.ctx.featurizer.normalize)
        else:
            featurizer = Featurizer(up.num_layers, layer=self.layer,
                                    normalize=self.ctx.featurizer.normalize)
        if self.ctx.featurizer.standardize:
            featurizer.set_statistics(*self.train_moments())
        head = self.build_head(self.feature_dim())
        if self.ctx.trainable:
            for p in up.model.parameters():
                p.requires_grad_(True)
        return DownstreamModel(featurizer, head, up.model, self.ctx.trainable)

    def train_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std of the hidden states the featurizer combines, over the
        training split: ``(L, D)`` for a weighted sum, ``(1, D)`` for one layer (memoised)."""
        if not hasattr(self, "_moments"):
            up = self.ctx.upstream
            wanted = None if self.layer is None else [self.layer]
            if self.uses_cache:
                moments = self.dataset(self.ctx.train_split).cached.moments()
            else:
                moments = _upstream_moments(up, self.split(self.ctx.train_split),
                                            wanted or list(range(up.num_layers)),
                                            self.ctx.featurizer.stats_utterances, self.ctx.device)
            self._moments = moments
        return self._moments

    def layer_weights(self, model: DownstreamModel) -> list[float]:
        """Weight of each upstream hidden state in the features (one-hot for a single layer)."""
        n = self.ctx.upstream.num_layers
        w = model.featurizer.layer_weights().tolist()
        if len(w) == n:
            return w
        out = [0.0] * n
        out[self.layer] = 1.0
        return out

    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        if "feats" in batch:
            return {"feats": batch["feats"], "lengths": batch["lengths"]}
        return {"wav": batch["wav"], "wav_lengths": batch["wav_lengths"]}

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        return self.compute_loss(model(**self.model_inputs(batch)), batch)

    # --- evaluation ---

    def predict(self, model: DownstreamModel, split: str, *, max_tokens: int,
                device: str | torch.device = "cpu") -> list[Any]:
        """Predictions for every utterance of ``split`` in manifest order (model in eval mode)."""
        from speechssl.data.sampler import MaxTokensBatchSampler

        ds = self.dataset(split)
        sampler = MaxTokensBatchSampler(ds.sizes, max(max_tokens, max(ds.sizes)), shuffle=False)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=self.collate)
        predictions: list[Any] = [None] * len(ds)
        model.eval().to(device)
        with torch.no_grad():
            for batch in progress_bar(loader, desc=f"evaluating {self.name} {split}", leave=False, disable=None):
                batch = _to_device(batch, device)
                out = model(**self.model_inputs(batch))
                for i, p in zip(batch["index"].tolist(), self.decode(out, batch)):
                    predictions[i] = p
        return predictions

    def evaluate(self, model: DownstreamModel, split: str, *, max_tokens: int,
                 device: str | torch.device = "cpu") -> tuple[dict[str, float], list[Any]]:
        """``(metrics, predictions)`` of ``model`` on ``split``."""
        predictions = self.predict(model, split, max_tokens=max_tokens, device=device)
        return self.score(split, predictions), predictions

    def run_evaluation(self, split: str) -> tuple[dict[str, float], list[Any]]:
        """Tasks with ``trains = False`` evaluate the upstream directly here."""
        raise NotImplementedError(f"{type(self).__name__} trains a head; use evaluate()")


def _upstream_moments(upstream: LoadedUpstream, data: SplitData, layers: list[int], max_utts: int,
                      device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean/std per layer and dimension of the upstream's outputs on the first ``max_utts``
    utterances of a split (used when features are not cached)."""
    from speechssl.downstream.cache import compute_hidden_states

    m = data.manifest
    n = min(len(m), max_utts)
    head = Manifest(root=m.root, paths=m.paths[:n], sizes=m.sizes[:n], source=m.source)
    loader = data.load_audio or _audio_loader(m)
    total = count = None
    for _, states, lengths in compute_hidden_states(upstream, head, layers, max_samples=16000 * 120,
                                                    device=device, load_audio=loader):
        valid = (torch.arange(states[0].shape[1])[None] < lengths[:, None]).to(states[0].device)
        x = torch.stack([h[valid].double() for h in states])                 # (L, N_frames, D)
        s1, s2 = x.sum(1).cpu(), (x * x).sum(1).cpu()
        total = (s1, s2) if total is None else (total[0] + s1, total[1] + s2)
        count = int(lengths.sum()) + (count or 0)
    mean = total[0] / max(count, 1)
    std = (total[1] / max(count, 1) - mean * mean).clamp(min=0).sqrt()
    return mean.float(), std.float()


def _audio_loader(manifest: Manifest) -> Callable[[int], torch.Tensor]:
    from speechssl import audio

    def load(i: int) -> torch.Tensor:
        return audio.load(manifest.audio_path(i))
    return load


def _to_device(batch: dict[str, Any], device: str | torch.device) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device)
        elif isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
            out[k] = [x.to(device) for x in v]
        else:
            out[k] = v
    return out


def class_index(values: list[str], names: list[str], *, source: Any) -> list[int]:
    """Map label strings to class indices, with an error naming an unknown label and its row."""
    index = {n: i for i, n in enumerate(names)}
    out = []
    for row, v in enumerate(values, start=1):
        if v not in index:
            raise ValueError(f"{source}:{row}: label {v!r} is not one of the {len(names)} training "
                             f"classes ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")
        out.append(index[v])
    return out


def sorted_classes(values: list[str]) -> list[str]:
    """The distinct labels, sorted (numerically when all are integers)."""
    distinct = set(values)
    if all(v.lstrip("-").isdigit() for v in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)

