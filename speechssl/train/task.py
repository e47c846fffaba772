"""The Task contract: everything method- or task-specific that the Trainer needs.

The Trainer knows nothing about HuBERT, SSAMBA or keyword spotting. A Task builds the model
and the datasets, batches items, and turns a batch into a loss. Pretraining methods and
downstream tasks both implement it.

Loss normalisation follows fairseq: :meth:`Task.loss` returns the loss *summed* over
``sample_size`` units (frames, tokens, utterances); the Trainer adds losses and sample sizes
over gradient-accumulation steps and distributed ranks and divides by the total once. So
``update_freq=2`` on one process equals two processes with ``update_freq=1``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

__all__ = ["Task", "SizedDataset", "PretrainContext"]


class SizedDataset(torch.utils.data.Dataset):
    """A map-style dataset whose items have a known cost for ``max_tokens`` batching.

    Attributes:
        sizes: one int per item, its cost in tokens (for audio: samples at 16 kHz, after any
            cropping the dataset applies). The Trainer's batch sampler groups items so that
            ``max(sizes in batch) * len(batch) <= max_tokens``.

    Items must be a deterministic function of ``(index, epoch)``: random crops draw from
    a generator seeded by ``(seed, epoch, index)``, never from global RNG, so that resumed
    and distributed runs see the same data. The Trainer calls :meth:`set_epoch` before each epoch.
    """

    sizes: Sequence[int]

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer before each epoch (1-based)."""


@dataclass(frozen=True)
class PretrainContext:
    """What a pretraining Task gets besides its own config: ``TaskCls(cfg, ctx)``.

    Attributes:
        method: registry name of the method being pretrained (``"hubert"``).
        model: the method's model config dataclass (a preset, after YAML and overrides).
        seed: the run seed (``trainer.seed``); data construction that needs randomness derives from it.
    """

    method: str
    model: Any
    seed: int = 0


class Task(abc.ABC):
    """Base class of pretraining and downstream tasks.

    Constructor contract: every Task is built as ``TaskCls(cfg, ctx)``. ``cfg`` is the task's own
    config dataclass; ``ctx`` is a :class:`PretrainContext` for pretraining tasks (``speechssl
    pretrain`` builds one from the method name, the model config and the seed) and a
    ``speechssl.downstream.task.RunContext`` for downstream tasks (upstream, data directory,
    featurizer, cache). The constructor must not build the model or touch the data yet.

    The Trainer then calls, in order:
    :meth:`build_model` once, :meth:`dataset` for ``"train"`` and the validation split,
    :meth:`collate` on lists of items, and :meth:`loss` on each (device-moved) batch.

    Attributes:
        method: registry name of the upstream this task pretrains (``"hubert"``), or None for
            tasks that train something else (downstream heads). When set, checkpoints record
            it with :meth:`upstream_config` so ``hub.load`` can rebuild the upstream from a
            training checkpoint.
    """

    method: str | None = None

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """The ``TrainerConfig`` a model preset trains with by default, or None for the defaults.

        ``speechssl pretrain --preset P`` starts the ``trainer`` section from this (then the YAML
        file and the overrides apply), so a ``tiny`` preset can come with a short schedule.
        """
        return None

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """The module the Trainer optimises (its trainable parameters get the optimizer)."""

    @abc.abstractmethod
    def dataset(self, split: str) -> SizedDataset:
        """The dataset of ``split`` (``"train"``, ``"valid"``, ...)."""

    @abc.abstractmethod
    def collate(self, items: list[Any]) -> dict[str, Any]:
        """Batch a list of dataset items into a dict of tensors (and plain values)."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        """Compute the loss of one batch.

        ``model`` may be wrapped (DistributedDataParallel): call it (``model(...)``) rather
        than its other methods, so gradients are synchronised.

        Returns:
            loss: scalar tensor, summed over ``sample_size`` units.
            sample_size: number of units the loss is summed over (> 0).
            logs: floats that are *sums* over the batch; the Trainer adds them over steps
                and ranks and hands the sums to :meth:`reduce_logs`.
        """

    def reduce_logs(self, sums: dict[str, float], sample_size: float) -> dict[str, float]:
        """Turn summed logs into reported values. Default: every sum divided by ``sample_size``."""
        return {k: v / max(sample_size, 1e-12) for k, v in sums.items()}

    def upstream(self, model: nn.Module) -> nn.Module:
        """The part of ``model`` that follows the upstream contract (default: all of it)."""
        return model

    def upstream_config(self) -> Any:
        """The config dataclass of :meth:`upstream` (required when :attr:`method` is set)."""
        raise NotImplementedError(f"{type(self).__name__} sets method={self.method!r} "
                                  "but does not implement upstream_config()")

    def on_update(self, model: nn.Module, num_updates: int) -> None:
        """Called after every optimizer update (e.g. for EMA teachers or annealed temperatures)."""

    def state_dict(self) -> dict[str, Any]:
        """Task state to checkpoint (e.g. a curriculum position). Default: none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
