"""The shared Trainer: it optimises whatever a :class:`~speechssl.train.task.Task` builds.

One update = ``update_freq`` batches per rank. Losses are sums over ``sample_size`` units;
the Trainer adds losses and sample sizes over the accumulated batches and over ranks and
divides the gradients once by the total (fairseq's normalisation), so ``update_freq=2`` on one
process matches two processes with ``update_freq=1``.

Usage::

    trainer = Trainer(task, TrainerConfig(max_updates=1000), "exp/run1")
    trainer.fit()                 # resumes from exp/run1/checkpoint_last.pt when present

Resuming takes the newest complete checkpoint whose tensors match their digests
(``checkpoint_last.pt``, or a newer/intact ``checkpoint_<n>.pt`` when the last one was being
written when the run was killed); it is loaded and checked before anything in ``exp_dir`` is
written, so a refused resume leaves ``config.yaml`` as it was; ``metrics.jsonl`` is cut back to
the resume point, and temporaries that a killed run left are removed.

Under ``torchrun --nproc_per_node N`` the same code runs distributed data parallel.

The Task's hooks (documented in :mod:`speechssl.train.task`): ``frozen_modules`` (kept out of
the optimizer, DDP and training mode; checkpointed by reference + sha256, see
:mod:`speechssl.train.frozen`), ``no_weight_decay``/``layer_id``/``num_layers`` (parameter groups,
:mod:`speechssl.train.optim`), ``on_update`` (after each optimizer step, before validation and
checkpoints) and ``batch_coupled`` (``Task.gather`` all-gathers with gradients in DDP training
steps; logged once at start).
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import yaml
from torch import nn

from speechssl.atomic import atomic_write_text, remove_stale
from speechssl.config import to_dict
from speechssl.data.multisource import MultiSourceBatchSampler, MultiSourceDataset
from speechssl.data.sampler import MaxTokensBatchSampler
from speechssl.train import checkpoint as ckpt
from speechssl.train.config import TrainerConfig
from speechssl.train.device import autocast, configure_threads, move_to_device
from speechssl.train.distributed import all_gather_object, all_gather_with_grad, all_reduce_sum, init_distributed
from speechssl.train.frozen import FrozenModules
from speechssl.train.optim import build_optimizer, check_group_names, clip_grad_norm, param_groups
from speechssl.train.progress import TrainingLog
from speechssl.train.schedule import LRSchedule
from speechssl.train.task import SizedDataset, Task
from speechssl.version import __version__

__all__ = ["Trainer", "NonFiniteLossError"]

_log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many updates in a row had a NaN/inf loss or gradient."""


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    # DataLoader seeds torch in each worker from its generator; derive numpy/python from it.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@contextlib.contextmanager
def _isolated_rng(seed: int) -> Iterator[None]:
    """Run with every RNG seeded to ``seed``, then restore the states (validation, pre-flight)."""
    state = ckpt.rng_state()
    _seed_all(seed)
    try:
        yield
    finally:
        ckpt.set_rng_state(state)


def _set_epoch(dataset: Any, epoch: int) -> None:
    if hasattr(dataset, "set_epoch"):  # SizedDataset has it; a plain Dataset with sizes is fine too
        dataset.set_epoch(epoch)


def _groups(it: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(it)
    while group := list(islice(it, size)):
        yield group


class Trainer:
    """Train ``task``'s model on its ``train`` split, validating, logging and checkpointing.

    Args:
        task: supplies the model, datasets, collater and loss.
        cfg: the loop's settings.
        exp_dir: where checkpoints, ``config.yaml``, ``train.log``, ``metrics.jsonl`` and
            ``tensorboard/`` go.
        config_tree: the full resolved config to record (e.g. ``{"model": ..., "task": ...,
            "trainer": ...}`` as plain dicts); default ``{"trainer": to_dict(cfg)}``.

    Attributes:
        model: the model being trained (unwrapped, even under DDP).
        num_updates: optimizer updates done so far.
        epoch, batch_in_epoch: the data position of the next step (epoch is 1-based).

    Raises:
        ValueError: an invalid config (naming the field).
    """

    def __init__(self, task: Task, cfg: TrainerConfig, exp_dir: str | Path, *,
                 config_tree: dict[str, Any] | None = None) -> None:
        _check_config(cfg)
        self.task = task
        self.cfg = cfg
        self.exp_dir = Path(exp_dir)
        self.config_tree = config_tree if config_tree is not None else {"trainer": to_dict(cfg)}
        try:  # it goes into config.yaml and into checkpoints loaded with weights_only=True
            yaml.safe_dump(self.config_tree)
        except yaml.YAMLError as exc:
            raise TypeError(f"config_tree must hold only plain values (dicts, lists, str, numbers, None); "
                            f"convert dataclasses with speechssl.config.to_dict ({exc})") from None
        self.dist = init_distributed(cfg.device)
        self.device = self.dist.device
        autocast(self.device, cfg.precision)  # validates precision against the device

        _seed_all(cfg.seed)  # the same initial weights on every rank
        self.model: nn.Module = task.build_model().to(self.device)
        self.frozen = FrozenModules(self.model, task.frozen_modules(self.model), type(task).__name__)
        self._wrapped = self._wrap_ddp(self.model)
        self.optimizer = build_optimizer(self._param_groups(), cfg.optim)
        self._coupled_gather = all_gather_with_grad if task.batch_coupled and self.dist.world_size > 1 else None
        task.gather_fn = self._coupled_gather
        if task.batch_coupled:
            self._log_coupling()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")

        self.train_data = task.dataset(cfg.train_split)
        self.train_sampler = self._sampler(self.train_data, train=True)
        self.valid_data = task.dataset(cfg.valid_split) if cfg.valid_split else None
        self.schedule = LRSchedule(cfg.schedule, cfg.optim.lr, self._total_updates())

        self.num_updates = 0
        self.epoch = 1
        self.batch_in_epoch = 0
        self.best: float | None = None
        self.best_loss: float | None = None  # validation loss of the best checkpoint (breaks ties)
        self.best_update: int | None = None  # the update checkpoint_best.pt holds
        self.stale_validations = 0  # validations in a row without a better best_metric (early stopping)
        self.stopped_early = False
        self._nan_streak = 0
        self._last_valid: dict[str, float] = {}
        self._validated_at = -1
        self._saved_at = -1
        self.log = TrainingLog(self.exp_dir, enabled=self.dist.is_main, tensorboard=cfg.tensorboard,
                               progress_bar=cfg.progress_bar)
        _seed_all(cfg.seed + self.dist.rank)  # distinct dropout/masking streams per rank

    # -- set-up -----------------------------------------------------------------------------
    def _param_groups(self) -> list[dict[str, Any]]:
        task, optim = self.task, self.cfg.optim
        no_decay = task.no_weight_decay(self.model) if not optim.decay_norm_bias else set()
        groups = param_groups(self.model.named_parameters(), optim, no_decay=no_decay, layer_id=task.layer_id,
                              num_layers=int(task.num_layers or 0))
        if len(groups) > 1:
            _log.info("optimizer groups: %s", ", ".join(
                f"{g['name']} ({len(g['params'])} tensors, wd {g['weight_decay']:g}, lr x{g['lr_scale']:.4g})"
                for g in groups))
        return groups

    def _log_coupling(self) -> None:
        world, uf = self.dist.world_size, self.cfg.update_freq
        negatives = (f"its own items and the same-step items of all {world} ranks (gathered with gradients)"
                     if world > 1 else "the items of its own batch (one process)")
        _log.info("batch-coupled task: each batch's loss uses as negatives %s; update_freq=%d accumulates %d "
                  "such losses per update and does not enlarge the set of negatives; gradients are "
                  "normalised by the total sample_size over batches and ranks; validation uses each "
                  "rank's own batch", negatives, uf, uf)

    def _wrap_ddp(self, model: nn.Module) -> nn.Module:
        if self.dist.world_size == 1:
            return model
        if self.frozen:  # neither gradient-synchronised nor broadcast
            nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                model, self.frozen.ddp_ignore())
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, find_unused_parameters=self.cfg.find_unused_parameters)

    def _sampler(self, dataset: SizedDataset, *, train: bool) -> MaxTokensBatchSampler | MultiSourceBatchSampler:
        """Length-bucketed max-tokens batches; one source per batch for a ``MultiSourceDataset``."""
        if not hasattr(dataset, "sizes"):
            raise ValueError(f"{type(dataset).__name__} has no 'sizes'; Task.dataset must return a SizedDataset")
        kw = dict(max_sentences=self.cfg.max_sentences, shuffle=train, seed=self.cfg.seed,
                  num_replicas=self.dist.world_size, rank=self.dist.rank, even_shards=train,
                  oversize=self.cfg.oversize)
        if isinstance(dataset, MultiSourceDataset):
            return MultiSourceBatchSampler(dataset, self.cfg.max_tokens, **kw)
        return MaxTokensBatchSampler(dataset.sizes, self.cfg.max_tokens, **kw)

    def _updates_per_epoch(self) -> int:
        return math.ceil(len(self.train_sampler) / self.cfg.update_freq)

    def _total_updates(self) -> int:
        if self.cfg.max_updates:
            return self.cfg.max_updates
        return self.cfg.max_epochs * self._updates_per_epoch()

    def _planned_updates(self) -> int:
        """Updates until the first limit (max_updates or max_epochs), for progress lines and the ETA."""
        limits = [self.cfg.max_updates] if self.cfg.max_updates else []
        if self.cfg.max_epochs:
            limits.append(self.cfg.max_epochs * self._updates_per_epoch())
        return min(limits)

    def _loader(self, dataset: SizedDataset, sampler: torch.utils.data.Sampler, epoch: int) -> torch.utils.data.DataLoader:
        # A private generator: creating the loader must not draw from the global torch RNG,
        # or a resumed run (which creates it at a different point) would diverge.
        generator = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, collate_fn=self.task.collate, num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda", generator=generator, worker_init_fn=_seed_worker)

    # -- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train until ``max_updates``/``max_epochs``; return the last validation results."""
        self.log.open()
        configure_threads()
        try:
            if self.dist.is_main:  # temporaries of writes a killed run left (its own directory: any age)
                remove_stale(self.exp_dir, unowned_age_s=0)
            self._maybe_resume()   # refused before anything of the run is overwritten
            self.log.rewind(self.num_updates)
            self.log.plan(self._planned_updates(), self.num_updates)
            self._save_config()
            if self.cfg.scan_oom_batches and not self._done():
                self._scan_pessimistic_batches(self.cfg.scan_oom_batches)
            while not self._done():
                self._train_epoch()
            self._finish()
            if self.dist.owns_group and torch.distributed.is_initialized():
                # tear the group down together: a rank destroying it while a peer's gloo threads
                # still serve the last collective aborted that peer ("terminate called ...")
                torch.distributed.barrier()
            return self._last_valid
        finally:
            self.log.close()
            if self.dist.owns_group and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()

    def _done(self) -> bool:
        cfg = self.cfg
        return bool(self.stopped_early or (cfg.max_updates and self.num_updates >= cfg.max_updates)
                    or (cfg.max_epochs and self.epoch > cfg.max_epochs))

    def _train_epoch(self) -> None:
        epoch, uf = self.epoch, self.cfg.update_freq
        _set_epoch(self.train_data, epoch)
        self.train_sampler.set_epoch(epoch, start_batch=self.batch_in_epoch)
        n_batches = len(self.train_sampler)
        if self.batch_in_epoch >= n_batches:  # a resume on fewer ranks can land past the end
            self.epoch, self.batch_in_epoch = epoch + 1, 0
            return
        self.log.start_epoch(epoch, math.ceil(n_batches / uf), math.ceil(self.batch_in_epoch / uf))
        if self.batch_in_epoch:
            _log.info("epoch %d: skipping the %d batches already trained on", epoch, self.batch_in_epoch)
        for group in _groups(self._loader(self.train_data, self.train_sampler, epoch), uf):
            stats = self._step(group, epoch)
            self.batch_in_epoch += len(group)
            end_of_epoch = self.batch_in_epoch >= n_batches
            if end_of_epoch:
                self.epoch, self.batch_in_epoch = epoch + 1, 0
            if stats is not None:
                self._maybe_log(stats)
            self._maybe_validate(end_of_epoch, epoch)
            self._maybe_save(end_of_epoch, epoch)
            if self._done():
                break
        self.log.end_epoch()

    def _step(self, group: list[dict[str, Any]], epoch: int) -> dict[str, float] | None:
        """Forward/backward ``group`` (one update's batches), reduce over ranks, update.

        Returns the update's stats, or None when the update was skipped (non-finite loss).
        """
        self._wrapped.train()
        self.frozen.eval()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        sample_size = 0.0
        log_sums: dict[str, float] = {}
        for i, batch in enumerate(group):
            batch = move_to_device(batch, self.device, non_blocking=self.device.type == "cuda")
            with self._sync(i == len(group) - 1):
                with autocast(self.device, self.cfg.precision):
                    loss, size, logs = self.task.loss(self._wrapped, batch)
                self.scaler.scale(loss).backward()
            loss_sum += loss.detach().double()
            sample_size += float(size)
            for k, v in logs.items():
                log_sums[k] = log_sums.get(k, 0.0) + float(v)
        keys = sorted(log_sums)
        totals = all_reduce_sum(torch.tensor(
            [float(loss_sum), sample_size, 0.0 if torch.isfinite(loss_sum) else 1.0] + [log_sums[k] for k in keys],
            dtype=torch.float64, device=self.device)).tolist()
        loss_total, sample_size, n_bad = totals[0], totals[1], totals[2]
        if n_bad or not math.isfinite(loss_total):
            return self._skip_update(f"non-finite loss ({loss_total}) on {int(n_bad)} rank(s)")
        if sample_size <= 0:
            _log.warning("update %d: sample_size is 0; skipping the update", self.num_updates + 1)
            self.optimizer.zero_grad(set_to_none=True)
            return None
        gnorm = self._unscale_and_clip(sample_size)
        if not math.isfinite(gnorm) and not self.scaler.is_enabled():
            return self._skip_update(f"non-finite gradient norm ({gnorm})")
        lr = self.schedule.apply(self.optimizer, self.num_updates)
        if not self._optimizer_step():
            _log.info("fp16 overflow: update skipped, loss scale now %g", self.scaler.get_scale())
            return None
        self._nan_streak = 0
        self.num_updates += 1
        self.task.on_update(self.model, self.num_updates)
        logs = self.task.reduce_logs(dict(zip(keys, totals[3:])), sample_size)
        return {**logs, "update": self.num_updates, "epoch": epoch, "loss": loss_total / sample_size,
                "lr": lr, "gnorm": gnorm, "sample_size": sample_size}

    def _sync(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        """DDP all-reduces gradients only on the last backward of an update."""
        if last or self._wrapped is self.model:
            return contextlib.nullcontext()
        return self._wrapped.no_sync()  # type: ignore[operator]

    def _unscale_and_clip(self, sample_size: float) -> float:
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        # DDP averaged the gradients over ranks; turn the average of sums into sum / total units.
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, self.dist.world_size / sample_size)
        return float(clip_grad_norm(self.model.parameters(), self.cfg.optim.clip_norm))

    def _optimizer_step(self) -> bool:
        """Step the optimizer; False when the fp16 scaler skipped it for an overflow."""
        if not self.scaler.is_enabled():
            self.optimizer.step()
            return True
        before = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= before

    def _skip_update(self, why: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._nan_streak += 1
        _log.warning("update %d skipped: %s (%d in a row, limit %d)", self.num_updates + 1, why,
                     self._nan_streak, self.cfg.max_consecutive_nan)
        if self._nan_streak >= self.cfg.max_consecutive_nan:
            raise NonFiniteLossError(
                f"{self._nan_streak} updates in a row had a non-finite loss or gradient (last: {why}) "
                f"at update {self.num_updates}, epoch {self.epoch}; lower trainer.optim.lr, use "
                "precision=fp32, check the data, or raise trainer.max_consecutive_nan")
        return None

    # -- logging, validation, checkpoints ---------------------------------------------------
    def _maybe_log(self, stats: dict[str, float]) -> None:
        every = self.cfg.log_every_updates
        self.log.update(stats, log_now=bool(every) and self.num_updates % every == 0)

    def _maybe_validate(self, end_of_epoch: bool, epoch: int) -> None:
        if self.valid_data is None or self._validated_at == self.num_updates:
            return
        every_u, every_e = self.cfg.validate_every_updates, self.cfg.validate_every_epochs
        due = (every_u and self.num_updates and self.num_updates % every_u == 0) or (
            end_of_epoch and every_e and epoch % every_e == 0)
        if due or self._done():
            self._validate_and_track(epoch)

    def _validate_and_track(self, epoch: int) -> None:
        stats = self.validate()
        self._validated_at = self.num_updates
        self._last_valid = stats
        self.log.valid(stats, update=self.num_updates, epoch=epoch, split=str(self.cfg.valid_split))
        if self.cfg.best_metric not in stats:
            raise ValueError(f"trainer.best_metric={self.cfg.best_metric!r} is not among the validation "
                             f"results: {', '.join(sorted(stats))}")
        value, loss = stats[self.cfg.best_metric], stats.get("loss", math.inf)
        # a tie on a saturating metric (accuracy 1.0) goes to the lower validation loss, so the
        # best checkpoint does not stay at the first update that reached the plateau
        better = self.best is None or (value > self.best if self.cfg.maximize_best_metric else value < self.best) or (
            value == self.best and self.best_loss is not None and loss < self.best_loss)
        if better and math.isfinite(value):
            self.best, self.best_loss, self.best_update = value, loss, self.num_updates
            self.stale_validations = 0
            self._save([ckpt.BEST])
        else:
            self.stale_validations += 1
            patience = self.cfg.patience
            if patience and self.stale_validations >= patience and not self._done():
                self.stopped_early = True
                _log.info("early stop at update %d: %d validations in a row without a better %s "
                          "(trainer.patience=%d); the best, %s %s, was at update %s", self.num_updates,
                          self.stale_validations, self.cfg.best_metric, patience, self.cfg.best_metric,
                          _fmt_value(self.best), self.best_update)

    def validate(self) -> dict[str, float]:
        """Loss and task metrics on the validation split, summed over ranks ({} without one)."""
        if self.valid_data is None:
            return {}
        sampler = self._sampler(self.valid_data, train=False)
        _set_epoch(self.valid_data, 1)  # the same crops every time, so values compare across epochs
        was_training = self.model.training
        self.model.eval()
        self.task.gather_fn = None  # each rank's own batch: validation batches differ in count per rank
        loss_sum, sample_size, log_sums = 0.0, 0.0, {}
        try:
            with torch.no_grad(), _isolated_rng(self.cfg.seed):
                for batch in self._loader(self.valid_data, sampler, 1):
                    batch = move_to_device(batch, self.device)
                    with autocast(self.device, self.cfg.precision):
                        loss, size, logs = self.task.loss(self.model, batch)
                    loss_sum += float(loss)
                    sample_size += float(size)
                    for k, v in logs.items():
                        log_sums[k] = log_sums.get(k, 0.0) + float(v)
        finally:
            self.model.train(was_training)
            self.frozen.eval()
            self.task.gather_fn = self._coupled_gather
        keys = sorted(log_sums)
        totals = all_reduce_sum(torch.tensor([loss_sum, sample_size] + [log_sums[k] for k in keys],
                                             dtype=torch.float64, device=self.device)).tolist()
        results = self.task.reduce_logs(dict(zip(keys, totals[2:])), totals[1])
        results["loss"] = totals[0] / max(totals[1], 1e-12)
        return results

    def _maybe_save(self, end_of_epoch: bool, epoch: int) -> None:
        if self._saved_at == self.num_updates:
            return
        every_u, every_e = self.cfg.save_every_updates, self.cfg.save_every_epochs
        due = (every_u and self.num_updates and self.num_updates % every_u == 0) or (
            end_of_epoch and every_e and epoch % every_e == 0)
        if due or self._done():
            self._save_periodic()

    def _save_periodic(self) -> None:
        self._save([f"checkpoint_{self.num_updates}.pt", ckpt.LAST])
        self._saved_at = self.num_updates
        if self.dist.is_main:
            for p in ckpt.prune_checkpoints(self.exp_dir, self.cfg.keep_last):
                _log.debug("removed old checkpoint %s", p)

    def _last_epoch(self) -> int:
        """The epoch of the last update (the one the progress lines showed)."""
        return self.epoch - 1 if self.batch_in_epoch == 0 else self.epoch

    def _finish(self) -> None:
        if self.valid_data is not None and self._validated_at != self.num_updates:
            self._validate_and_track(self._last_epoch())
        if self._saved_at != self.num_updates:
            self._save_periodic()
        best = "" if self.best is None else f" at update {self.best_update}"
        _log.info("done: %d updates%s, epoch %d, best %s %s%s", self.num_updates,
                  " (stopped early)" if self.stopped_early else "", self._last_epoch(), self.cfg.best_metric,
                  _fmt_value(self.best), best)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint (collective under DDP: every rank must call it)."""
        rng = all_gather_object(ckpt.rng_state())
        state: dict[str, Any] = {
            "model": self.frozen.strip(self.model.state_dict()),
            "frozen": self.frozen.record(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {**self.schedule.state_dict(), "num_updates": self.num_updates},
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": rng,
            "data": {"epoch": self.epoch, "batch": self.batch_in_epoch, "world_size": self.dist.world_size},
            "num_updates": self.num_updates,
            "best": self.best,
            "best_loss": self.best_loss,
            "best_update": self.best_update,
            "stale_validations": self.stale_validations,
            "stopped_early": self.stopped_early,
            "nan_streak": self._nan_streak,
            "task": self.task.state_dict(),
            "config": self.config_tree,
            "speechssl_version": __version__,
        }
        if self.task.method:
            state["upstream"] = {
                "method": self.task.method,
                "config": to_dict(self.task.upstream_config()),
                "prefix": ckpt.submodule_prefix(self.model, self.task.upstream(self.model)),
            }
        return state

    def _save(self, names: list[str]) -> None:
        state = self.state_dict()
        if not self.dist.is_main:
            return
        first = self.exp_dir / names[0]
        ckpt.save_checkpoint(state, first)
        for name in names[1:]:
            ckpt.copy_checkpoint(first, self.exp_dir / name)
        _log.info("saved %s (update %d)", ", ".join(names), self.num_updates)

    def _save_config(self) -> None:
        if self.dist.is_main:
            atomic_write_text(self.exp_dir / "config.yaml", yaml.safe_dump(self.config_tree, sort_keys=False))

    def _maybe_resume(self) -> None:
        """Load the newest complete, verified checkpoint of ``exp_dir`` (see ``ckpt.load_latest``)."""
        if not self.cfg.resume:
            return
        found = ckpt.load_latest(self.exp_dir)
        if found is None:
            return
        path, state = found
        self.model.load_state_dict(self.frozen.restore(state["model"], state.get("frozen", {}), str(path)))
        check_group_names(state["optimizer"], self.optimizer, str(path))
        configured = [(g.get("weight_decay"), g.get("lr_scale")) for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for g, (wd, scale) in zip(self.optimizer.param_groups, configured):  # the config's values win
            if wd is not None:
                g["weight_decay"] = wd
            if scale is not None:
                g["lr_scale"] = scale
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.task.load_state_dict(state.get("task", {}))
        self.num_updates = int(state["num_updates"])
        self.best = state.get("best")
        self.best_loss = state.get("best_loss")
        self.best_update = state.get("best_update")
        self.stale_validations = int(state.get("stale_validations", 0))
        # a stopped run stays stopped unless the config now allows more validations without progress
        self.stopped_early = bool(state.get("stopped_early", False) and self.cfg.patience
                                  and self.stale_validations >= self.cfg.patience)
        self._nan_streak = int(state.get("nan_streak", 0))
        self.epoch, self.batch_in_epoch = int(state["data"]["epoch"]), int(state["data"]["batch"])
        rngs = state["rng"]
        old_world = int(state["data"].get("world_size", len(rngs)))
        if old_world != self.dist.world_size:
            _log.warning("resuming a %d-rank run on %d ranks: data position and RNG streams are approximate",
                         old_world, self.dist.world_size)
            self.batch_in_epoch = self.batch_in_epoch * old_world // self.dist.world_size
        ckpt.set_rng_state(rngs[self.dist.rank % len(rngs)])
        self._saved_at = self._validated_at = self.num_updates
        _log.info("resumed from %s: update %d, epoch %d, batch %d", path, self.num_updates, self.epoch,
                  self.batch_in_epoch)

    def _scan_pessimistic_batches(self, n: int) -> None:
        """Forward/backward the ``n`` largest batches of the epoch without updating (fail fast on OOM)."""
        _set_epoch(self.train_data, self.epoch)
        batches = self.train_sampler.batches(self.epoch)
        sizes = self.train_sampler.sizes

        def cost(b: list[int]) -> int:
            return len(b) * int(sizes[b].max())

        largest = sorted(batches, key=cost, reverse=True)[:n]
        buffers = {k: v.detach().clone() for k, v in self.model.named_buffers()}
        _log.info("pre-flight: running the %d largest batches (up to %d tokens)", len(largest), cost(largest[0]))
        with _isolated_rng(self.cfg.seed):
            for b in largest:
                batch = move_to_device(self.task.collate([self.train_data[i] for i in b]), self.device)
                try:
                    with self._sync(last=False), autocast(self.device, self.cfg.precision):
                        loss, _, _ = self.task.loss(self._wrapped, batch)
                    with self._sync(last=False):
                        self.scaler.scale(loss).backward()
                except (torch.OutOfMemoryError, MemoryError):
                    raise RuntimeError(
                        f"pre-flight: a batch of {len(b)} items x {int(sizes[b].max())} samples ran out of "
                        f"memory on {self.device}; lower trainer.max_tokens (now {self.cfg.max_tokens})") from None
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, v in self.model.named_buffers():
                v.copy_(buffers[k])


def _fmt_value(v: float | None) -> str:
    return "none" if v is None else f"{v:.6g}"


def _check_config(cfg: TrainerConfig) -> None:
    if cfg.max_updates <= 0 and cfg.max_epochs <= 0:
        raise ValueError("set trainer.max_updates or trainer.max_epochs (both are 0: training would never stop)")
    if cfg.max_updates < 0 or cfg.max_epochs < 0:
        raise ValueError(f"trainer.max_updates and max_epochs must be >= 0, got {cfg.max_updates}, {cfg.max_epochs}")
    if cfg.update_freq < 1:
        raise ValueError(f"trainer.update_freq must be >= 1, got {cfg.update_freq}")
    if cfg.max_consecutive_nan < 1:
        raise ValueError(f"trainer.max_consecutive_nan must be >= 1, got {cfg.max_consecutive_nan}")
    for name in ("validate_every_updates", "validate_every_epochs", "save_every_updates", "save_every_epochs",
                 "log_every_updates", "num_workers", "scan_oom_batches", "patience"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"trainer.{name} must be >= 0, got {getattr(cfg, name)}")
