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
from typing import Any, Callable

import torch
from torch import nn

from speechssl.data.base import SizedDataset  # re-exported: the data layer owns it, train depends on data

__all__ = ["Task", "SizedDataset", "PretrainContext"]


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

    The Trainer then calls, in order: :meth:`build_model` once; :meth:`frozen_modules` on the
    model; :meth:`no_weight_decay` and :meth:`layer_id` while it builds the optimizer's
    parameter groups; :meth:`dataset` for ``"train"`` and the validation split; then per update
    :meth:`collate` on lists of items, :meth:`loss` on each (device-moved) batch and
    :meth:`on_update` after the optimizer step; :meth:`state_dict` whenever it checkpoints and
    :meth:`load_state_dict` when it resumes.

    Attributes:
        method: registry name of the upstream this task pretrains (``"hubert"``), or None for
            tasks that train something else (downstream heads). When set, checkpoints record
            it with :meth:`upstream_config` so ``hub.load`` can rebuild the upstream from a
            training checkpoint.
        num_layers: the number of blocks L that :meth:`layer_id` counts (0: the task has no
            layers, ``trainer.optim.layer_decay`` is refused).
        batch_coupled: True when the loss of an item depends on the other items of the batch
            (contrastive losses: the other items are the negatives). Under DDP the Trainer then
            makes :meth:`gather` return every rank's items, so the negatives of one step are
            the items of all ranks' batches of that step. Gradient accumulation
            (``update_freq > 1``) does not enlarge that set: each accumulated batch's loss sees
            its own items and the same-step items of the other ranks. The Trainer logs this once.
        gather_fn: set by the Trainer, never by the task: the differentiable all-gather
            :meth:`gather` uses, or None (single process, validation, not batch-coupled).
    """

    method: str | None = None
    num_layers: int = 0
    batch_coupled: bool = False
    gather_fn: Callable[[torch.Tensor], tuple[torch.Tensor, int]] | None = None

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """The ``TrainerConfig`` a model preset trains with by default, or None for the defaults.

        ``speechssl pretrain --preset P`` starts the ``trainer`` section from this (then the YAML
        file and the overrides apply), so a ``tiny`` preset can come with a short schedule.
        """
        return None

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """The module the Trainer optimises: its trainable parameters, less :meth:`frozen_modules`.

        Modules frozen by reference (teachers) must be built here, from their reference, with
        their final weights: on resume this is how they come back (the checkpoint holds only the
        reference and a hash).
        """

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

    # -- optimizer hooks ------------------------------------------------------------------------
    def no_weight_decay(self, model: nn.Module) -> set[str]:
        """Parameter names (as in ``model.named_parameters()``) that never get weight decay.

        Used only with ``trainer.optim.decay_norm_bias=false``, which also exempts every
        parameter with ``ndim <= 1``. Default: the parameters marked ``p._no_weight_decay = True``
        (the Mamba convention, e.g. ``A_log`` and ``D``).
        """
        return {name for name, p in model.named_parameters() if getattr(p, "_no_weight_decay", False)}

    def layer_id(self, name: str) -> int | None:
        """The layer of parameter ``name`` for layer-wise lr decay (``trainer.optim.layer_decay``).

        Returns 0 for the embeddings / front-end, ``i`` in ``1..num_layers`` for block ``i``,
        ``num_layers + 1`` for what follows the last block, or None (default) for a parameter
        outside the layer count (it gets the full lr). The lr factor is
        ``layer_decay ** (num_layers + 1 - layer_id)``.
        """
        return None

    def frozen_modules(self, model: nn.Module) -> dict[str, str | None]:
        """Submodules of ``model`` that are never optimised: ``{name: reference or None}``.

        ``name`` is a submodule path as in ``model.named_modules()`` (``"teacher"``). A reference
        string (a hub path, a checkpoint path) marks a module that never changes: the training
        checkpoint stores the reference and the sha256 of its tensors instead of its weights, and
        on resume the Trainer checks that :meth:`build_model` rebuilt the same tensors. None
        marks a module that changes without the optimizer (an EMA teacher updated in
        :meth:`on_update`): its weights are checkpointed with the model. Frozen modules get
        ``requires_grad=False``, are in no optimizer group, are neither gradient-synchronised nor
        broadcast by DDP, and stay in eval mode during training. Default: none.
        """
        return {}

    # -- hooks around updates -------------------------------------------------------------------
    def on_update(self, model: nn.Module, num_updates: int) -> None:
        """Called after every optimizer update, before any validation or checkpoint of that update.

        ``model`` is the unwrapped model and ``num_updates`` counts the updates done, this one
        included (so the first call gets 1). Updates the Trainer skips (non-finite loss, fp16
        overflow) do not call it. The place for an EMA teacher (``ema = d * ema + (1 - d) *
        student``, on every rank alike), a temperature or mask-probability schedule (a function
        of ``num_updates``), or sampling the next supernet sub-network. State it changes must be
        either in the model (an EMA teacher frozen with reference None is checkpointed with it) or
        returned by :meth:`state_dict`, so that a resumed run continues exactly.
        """

    def state_dict(self) -> dict[str, Any]:
        """Task state to checkpoint (e.g. a curriculum position). Default: none.

        Tensors and plain containers only (checkpoints load with ``weights_only=True``).
        """
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    # -- batch-coupled losses -------------------------------------------------------------------
    @property
    def gathering(self) -> bool:
        """Whether :meth:`gather` gathers now (a batch-coupled task's training step under DDP).

        Pass it to the losses of :mod:`speechssl.nn.losses` (``info_nce(..., gather=self.gathering)``)
        rather than ``gather=True``: validation batches differ in number across ranks, and a
        collective there would hang.
        """
        return self.gather_fn is not None

    def gather(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Every rank's ``x`` (``(B_r, ...)``) concatenated along dim 0, and this rank's offset in it.

        For :attr:`batch_coupled` tasks, in :meth:`loss`: ``keys, offset = self.gather(z)`` gives
        the negatives of every rank; this rank's item ``i`` is ``keys[offset + i]``. The result is
        differentiable, and with the loss still summed over this rank's own items (and
        ``sample_size`` counting them) the update equals one process computing the loss of all
        ranks' items at once. On one process, in validation (where each rank's batch is its own,
        so the results do not depend on the number of ranks) and for tasks that are not
        batch-coupled it returns ``(x, 0)``. Every rank must call it equally often per batch.
        """
        if self.gather_fn is None:
            return x, 0
        return self.gather_fn(x)
