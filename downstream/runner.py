"""The SUPERB-style runner: train a task's head on a frozen upstream, evaluate, write results.

An experiment directory (``--expdir``, default ``exp/downstream/<name>``) holds::

    config.yaml            the resolved config tree {run, task, trainer} (written by the Trainer)
    checkpoint_best.pt     best validation checkpoint (plus checkpoint_last.pt, checkpoint_<n>.pt)
    train.log, metrics.jsonl, tensorboard/    training logs (the shared Trainer's)
    result.json            task, metric, value, direction, split, upstream name + hash, seed,
                           config, layer weights, training (best update, updates trained, early
                           stop), speechssl version
    predictions_<split>.tsv  id, prediction, reference per utterance
    lr_sweep/lr_<lr>/      with --lr-sweep: one such experiment per learning rate (see below)

Heads can stop early: with ``trainer.patience=N`` (default :data:`TRAINER_DEFAULTS`: off, before
the task's own defaults), N validations in a row without a better ``trainer.best_metric`` end the
training; ``checkpoint_best.pt`` is evaluated either way.

Learning-rate sweep (``--lr-sweep 1e-4,1e-3,1e-2``, ``run.lr_sweep``): one head per learning
rate, each a full experiment under ``lr_sweep/lr_<lr>/`` sharing the cached features; the lr
whose best checkpoint scores best on the validation split (the task's metric; ties go to the
earlier lr of the list) is chosen, and the top-level ``result.json`` is that run's result (its
test score) plus ``lr_sweep``: every lr with its validation and test scores. The test scores of
the other lrs are recorded, never used to choose.

Configuration is layered: the task's defaults, then ``-c FILE.yaml`` (sections ``run``,
``task``, ``trainer``), then ``-o`` overrides (``trainer.optim.lr=1e-3``,
``task.head.hidden_dim=128``, ``featurizer.layer=6``; keys without a ``task.``/``trainer.``
prefix address the ``run`` section), then the command-line flags.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from speechssl.atomic import atomic_write_text
from speechssl.config import ConfigError, apply_overrides, from_dict, merge, to_dict
from speechssl.downstream.cache import FeatureCache
from speechssl.downstream.task import CacheConfig, DownstreamTaskBase, FeaturizerConfig, RunContext
from speechssl.downstream.upstreams import LoadedUpstream, load_upstream
from speechssl.registry import DownstreamTask, get_downstream
from speechssl.train.checkpoint import BEST, LAST, load_checkpoint
from speechssl.train.config import TrainerConfig
from speechssl.version import __version__

__all__ = ["RunConfig", "Run", "prepare", "train", "evaluate", "sweep", "split_overrides", "RESULT_NAME",
           "TRAINER_DEFAULTS"]

_log = logging.getLogger(__name__)

RESULT_NAME = "result.json"

#: Trainer settings every downstream head starts from; a task's ``trainer_defaults`` override them.
#: Early stopping stays opt-in (``-o trainer.patience=3``) until the README's tables, measured
#: training every head to ``max_updates``, are measured again with it.
TRAINER_DEFAULTS: dict[str, Any] = {"patience": 0}


@dataclass
class RunConfig:
    """What to evaluate and how features are made (the ``run`` section of config.yaml)."""

    task: str = ""  # downstream task name (-d)
    upstream: str = ""  # fbank | mfcc | spectrogram | random:<method>[@preset] | model dir | zoo name (-u)
    upstream_ckpt: Optional[str] = None  # load this model dir / checkpoint instead (-k)
    upstream_trainable: bool = False  # fine-tune the upstream with the head (disables the cache)
    upstream_seed: int = 0  # initialisation seed of random:<method> upstreams
    data: str = ""  # corpus root (--data)
    seed: int = 1  # seed of the head's initialisation and data order (also trainer.seed)
    device: str = "auto"  # where the upstream runs while caching and evaluating
    lr_sweep: list[float] = field(default_factory=list)  # train one head per lr, keep the best on valid (--lr-sweep)
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


@dataclass
class Run:
    """A prepared experiment: its configs, directory, upstream and task."""

    run: RunConfig
    task_cfg: Any
    trainer: TrainerConfig
    spec: DownstreamTask
    expdir: Path
    upstream: LoadedUpstream
    task: DownstreamTaskBase

    def config_tree(self) -> dict[str, Any]:
        return {"run": to_dict(self.run), "task": to_dict(self.task_cfg), "trainer": to_dict(self.trainer)}


def split_overrides(values: list[str] | None) -> list[str]:
    """s3prl-style ``-o`` values into ``key=value`` items.

    Each ``-o`` may hold several items separated by ``,,`` (s3prl) or by a comma before the
    next ``key=``; brackets keep list values intact (``task.dims=[1,2]``).
    """
    out: list[str] = []
    for value in values or []:
        parts = value.split(",,") if ",," in value else re.split(r",(?=\s*[A-Za-z_][\w.]*\s*=)", value)
        out += [p.strip() for p in parts if p.strip()]
    return out


def _route(overrides: list[str]) -> dict[str, list[str]]:
    routed: dict[str, list[str]] = {"run": [], "task": [], "trainer": []}
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        head, _, rest = key.partition(".")
        if head in ("task", "trainer") and rest:
            routed[head].append(item[len(head) + 1:].lstrip())
        elif head == "run" and rest:
            routed["run"].append(item[4:].lstrip())
        else:
            routed["run"].append(item)
    return routed


def _load_tree(path: Path) -> dict[str, Any]:
    from speechssl.safe_io import BadFileError, load_yaml

    try:  # duplicate keys and syntax errors name file and line
        tree = load_yaml(path) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: cannot read the config: no such file") from None
    except BadFileError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping with run, task, trainer sections, got "
                          f"{type(tree).__name__} {str(tree)[:40]!r}")
    unknown = set(tree) - {"run", "task", "trainer"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level section(s) {sorted(unknown)}; expected run, task, trainer")
    return tree


def resolve_configs(*, base_tree: dict[str, Any] | None = None, config_file: str | Path | None = None,
                    overrides: list[str] | None = None, flags: dict[str, Any] | None = None
                    ) -> tuple[RunConfig, Any, TrainerConfig, DownstreamTask]:
    """Layer defaults, a saved tree (resume), a YAML file, ``-o`` overrides and CLI flags."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    tree = dict(base_tree or {})
    file_tree = _load_tree(Path(config_file)) if config_file else {}
    routed = _route(split_overrides(overrides))
    try:
        run = from_dict(RunConfig, tree.get("run", {}))
        run = merge(run, file_tree.get("run", {}))
        run = apply_overrides(run, routed["run"])
        run = merge(run, flags)
    except ConfigError as exc:
        raise ConfigError(f"run config: {exc}") from None
    if not run.task:
        raise ValueError("no task given: pass -d TASK (one of the registered downstream tasks)")
    spec = get_downstream(run.task)
    task_cls: type[DownstreamTaskBase] = spec.task_cls
    try:
        task_cfg = from_dict(spec.config_cls, tree.get("task", {}), base=spec.config_cls())
        task_cfg = merge(task_cfg, file_tree.get("task", {}))
        task_cfg = apply_overrides(task_cfg, routed["task"])
    except ConfigError as exc:
        raise ConfigError(f"task config ({run.task}): {exc}") from None
    try:
        trainer = from_dict(TrainerConfig, {**TRAINER_DEFAULTS, **task_cls.trainer_defaults}, base=TrainerConfig())
        if "trainer" in tree:
            trainer = merge(trainer, tree["trainer"])
        trainer = merge(trainer, file_tree.get("trainer", {}))
        trainer = apply_overrides(trainer, routed["trainer"])
    except ConfigError as exc:
        raise ConfigError(f"trainer config: {exc}") from None
    if "seed" in flags or not base_tree:  # one seed drives the whole run unless a saved tree says otherwise
        trainer = dataclasses.replace(trainer, seed=run.seed)
    for lr in run.lr_sweep:
        if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and 0 < lr < float("inf")):
            raise ConfigError(f"run.lr_sweep: learning rates must be positive numbers, got {lr!r}")
    if len(set(run.lr_sweep)) != len(run.lr_sweep):
        raise ConfigError(f"run.lr_sweep: a learning rate is listed twice: {run.lr_sweep}")
    return run, task_cfg, trainer, spec


def default_expdir(run: RunConfig, name: str | None) -> Path:
    """``exp/downstream/<name>``, the name defaulting to ``<task>_<upstream>``."""
    if not name:
        up = Path(run.upstream_ckpt).name if run.upstream_ckpt else run.upstream
        name = f"{run.task}_{re.sub(r'[^A-Za-z0-9_.@-]+', '_', up).strip('_')}"
    return Path("exp") / "downstream" / name


def prepare(run: RunConfig, task_cfg: Any, trainer: TrainerConfig, spec: DownstreamTask,
            expdir: str | Path) -> Run:
    """Load the upstream, set up the cache and build the task."""
    from speechssl.train.distributed import resolve_device

    expdir = Path(expdir)
    if not run.data:
        raise ValueError("no data given: pass --data CORPUS_DIR (e.g. from 'speechssl corpus synth')")
    data = Path(run.data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data}: no such directory")
    device = str(resolve_device(run.device))
    upstream = load_upstream(run.upstream, ckpt=run.upstream_ckpt, seed=run.upstream_seed, device=device,
                             modality=spec.modality)
    cache_root = Path(run.cache.dir) if run.cache.dir else expdir.parent / ".feature_cache"
    cache = None
    if run.cache.enabled and not run.upstream_trainable:
        cache = FeatureCache(cache_root, dtype=run.cache.dtype, max_samples=run.cache.max_samples, device=device)
    ctx = RunContext(upstream=upstream, data_dir=data, featurizer=run.featurizer, cache=cache,
                     trainable=run.upstream_trainable, seed=run.seed, work_dir=cache_root / "derived",
                     device=device, train_split=trainer.train_split)
    task = spec.task_cls(task_cfg, ctx)
    return Run(run=run, task_cfg=task_cfg, trainer=trainer, spec=spec, expdir=expdir, upstream=upstream, task=task)


def train(r: Run, *, test_split: str = "test") -> dict[str, Any]:
    """Train the head (or resume), then evaluate the best checkpoint on ``test_split``."""
    from speechssl.train import Trainer

    r.expdir.mkdir(parents=True, exist_ok=True)
    if not r.task.trains:
        _log.info("%s trains nothing; evaluating %s directly", r.spec.name, r.upstream.name)
        atomic_write_text(r.expdir / "config.yaml", yaml.safe_dump(r.config_tree(), sort_keys=False))
        return evaluate(r, None, split=test_split)
    start = time.time()
    trainer = Trainer(r.task, r.trainer, r.expdir, config_tree=r.config_tree())
    trainer.fit()
    ckpt = r.expdir / BEST if (r.expdir / BEST).is_file() else r.expdir / LAST
    training = {"best_update": trainer.best_update, "trained_updates": trainer.num_updates,
                "stopped_early": trainer.stopped_early, "patience": r.trainer.patience}
    return evaluate(r, ckpt, split=test_split, train_seconds=time.time() - start, training=training)


def _training_of(expdir: Path, best_state: dict[str, Any]) -> dict[str, Any]:
    """What training did, from the checkpoints: best update, updates trained, early stop."""
    last = best_state
    if (expdir / LAST).is_file():
        last = load_checkpoint(expdir / LAST)
    cfg = ((last.get("config") or {}).get("trainer") or {})
    return {"best_update": best_state.get("best_update", best_state.get("num_updates")),
            "trained_updates": last.get("num_updates"), "stopped_early": bool(last.get("stopped_early", False)),
            "patience": cfg.get("patience", 0)}


def evaluate(r: Run, ckpt: str | Path | None, *, split: str = "test",
             train_seconds: float | None = None, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score ``ckpt`` (or, for tasks without training, the upstream) on ``split`` and on the
    validation split; write ``result.json`` (for ``split == "test"``, else
    ``result_<split>.json``) and ``predictions_<split>.tsv``."""
    from speechssl.train.distributed import resolve_device

    device = resolve_device(r.trainer.device)
    weights: list[float] | None = None
    num_updates = None
    if r.task.trains:
        if ckpt is None or not Path(ckpt).is_file():
            raise FileNotFoundError(f"checkpoint {ckpt} not found; train first (-m train) or pass -e EXPDIR|CKPT")
        state = load_checkpoint(ckpt)
        model = r.task.build_model()
        model.load_state_dict(state["model"])
        num_updates = state.get("num_updates")
        if training is None:
            training = _training_of(Path(ckpt).parent, state)
        run_eval = lambda s: r.task.evaluate(model, s, max_tokens=r.trainer.max_tokens, device=device)  # noqa: E731
        weights = r.task.layer_weights(model)
    else:
        run_eval = r.task.run_evaluation
    metrics, predictions = run_eval(split)
    if not r.task.trains:
        weights = r.task.layer_weights(None)
    valid: dict[str, float] = {}
    if r.trainer.valid_split and r.trainer.valid_split != split:
        valid, _ = run_eval(r.trainer.valid_split)
    r.expdir.mkdir(parents=True, exist_ok=True)
    lines = [r.task.format_prediction(split, i, p) for i, p in enumerate(predictions)]
    atomic_write_text(r.expdir / f"predictions_{split}.tsv", "\n".join(lines) + "\n")
    metric = r.spec.metric
    if metric not in metrics:
        raise RuntimeError(f"task {r.spec.name} scored {sorted(metrics)} but declares metric {metric!r}")
    result = {
        "task": r.spec.name,
        "description": r.spec.description,
        "metric": metric,
        "value": metrics[metric],
        "higher_is_better": r.spec.higher_is_better,
        "split": split,
        "metrics": metrics,
        "scored": {"count": r.task.scored_items(predictions), "unit": r.task.scored_unit},
        "valid_split": r.trainer.valid_split,
        "valid_metrics": valid,
        "upstream": {**r.upstream.describe(), "ckpt": r.run.upstream_ckpt, "trainable": r.run.upstream_trainable},
        "featurizer": to_dict(r.run.featurizer),
        "layer_weights": weights,
        "checkpoint": str(ckpt) if ckpt else None,
        "num_updates": num_updates,
        "training": training,
        "seed": r.run.seed,
        "config": r.config_tree(),
        "speechssl_version": __version__,
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if train_seconds is not None:
        result["train_seconds"] = round(train_seconds, 1)
    name = RESULT_NAME if split == "test" else f"result_{split}.json"
    atomic_write_text(r.expdir / name, json.dumps(result, indent=1) + "\n")
    _log.info("%s on %s (%s): %s = %.4f %s", r.upstream.name, r.spec.name, split, metric, metrics[metric],
              "(higher is better)" if r.spec.higher_is_better else "(lower is better)")
    return result


def sweep_dir(expdir: str | Path, lr: float) -> Path:
    """The experiment directory of one learning rate of a sweep: ``<expdir>/lr_sweep/lr_<lr>``."""
    return Path(expdir) / "lr_sweep" / f"lr_{lr:g}"


def sweep(r: Run, *, mode: str = "train", test_split: str = "test") -> dict[str, Any]:
    """Train (``mode="train"``, resuming finished or interrupted lrs) or re-evaluate
    (``"evaluate"``) one head per ``r.run.lr_sweep`` learning rate, choose by the validation
    metric and write the top-level ``result.json`` (see the module docstring)."""
    lrs = list(r.run.lr_sweep)
    if not lrs:
        raise ValueError("sweep() needs run.lr_sweep (--lr-sweep LR,LR,...)")
    if not r.task.trains:
        raise ValueError(f"--lr-sweep: task {r.spec.name} trains no head, so it has no learning rate to sweep")
    valid_split = r.trainer.valid_split
    if not valid_split or valid_split == test_split:
        raise ValueError(f"--lr-sweep chooses the lr on the validation split, so it needs trainer.valid_split "
                         f"other than the test split {test_split!r} (got {valid_split!r})")
    metric, higher = r.spec.metric, r.spec.higher_is_better
    r.expdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(r.expdir / "config.yaml", yaml.safe_dump(r.config_tree(), sort_keys=False))
    results: list[dict[str, Any]] = []
    for lr in lrs:
        trainer_cfg = dataclasses.replace(r.trainer, optim=dataclasses.replace(r.trainer.optim, lr=lr))
        sub = dataclasses.replace(r, run=dataclasses.replace(r.run, lr_sweep=[]), trainer=trainer_cfg,
                                  expdir=sweep_dir(r.expdir, lr))
        _log.info("lr sweep: lr %g (%d of %d) -> %s", lr, len(results) + 1, len(lrs), sub.expdir)
        if mode == "train":
            results.append(train(sub, test_split=test_split))
        else:
            results.append(evaluate(sub, checkpoint_for(sub.expdir, None), split=test_split))

    def score(res: dict[str, Any]) -> float:
        v = res["valid_metrics"].get(metric)
        if v is None:
            raise RuntimeError(f"{res['checkpoint']}: no {metric!r} on {valid_split!r} to choose the lr by")
        v = float(v)
        if v != v:  # NaN ranks last
            return -float("inf")
        return v if higher else -v

    chosen = max(range(len(lrs)), key=lambda i: (score(results[i]), -i))
    best = results[chosen]
    runs = [{"lr": lr, "valid": res["valid_metrics"].get(metric), "test": res["value"],
             "expdir": str(sweep_dir(r.expdir, lr)), **(res.get("training") or {})} for lr, res in zip(lrs, results)]
    result = {**best, "config": r.config_tree(),
              "lr_sweep": {"lrs": lrs, "chosen_lr": lrs[chosen], "metric": metric, "selected_on": valid_split,
                           "runs": runs}}
    seconds = [res.get("train_seconds") for res in results]
    if all(s is not None for s in seconds):
        result["train_seconds"] = round(sum(seconds), 1)
    predictions = sweep_dir(r.expdir, lrs[chosen]) / f"predictions_{test_split}.tsv"
    atomic_write_text(r.expdir / f"predictions_{test_split}.tsv", predictions.read_text())
    name = RESULT_NAME if test_split == "test" else f"result_{test_split}.json"
    atomic_write_text(r.expdir / name, json.dumps(result, indent=1) + "\n")
    _log.info("lr sweep on %s: %s", r.spec.name, "; ".join(
        f"lr {x['lr']:g}: {valid_split} {metric} {x['valid']:.4f}, {test_split} {x['test']:.4f}" for x in runs))
    _log.info("lr sweep: chose lr %g by %s %s (%s); %s %s = %.4f", lrs[chosen], valid_split, metric,
              "higher is better" if higher else "lower is better", test_split, metric, best["value"])
    return result


def find_past_exp(path: str | Path) -> tuple[Path, Path | None]:
    """``-e PATH``: an experiment directory or a checkpoint inside one → (expdir, checkpoint or None)."""
    path = Path(path)
    if path.is_dir():
        expdir, ckpt = path, None
    elif path.is_file():
        expdir, ckpt = path.parent, path
    else:
        raise FileNotFoundError(f"-e {path}: no such experiment directory or checkpoint")
    if not (expdir / "config.yaml").is_file():
        raise FileNotFoundError(f"-e {path}: {expdir} has no config.yaml; is it a downstream experiment?")
    return expdir, ckpt


def saved_tree(expdir: Path) -> dict[str, Any]:
    """The config tree an experiment directory recorded."""
    return _load_tree(expdir / "config.yaml")


def read_result(expdir: str | Path) -> dict[str, Any]:
    """``result.json`` of an experiment directory."""
    path = Path(expdir) / RESULT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the experiment has not been evaluated "
                                "(run -m train or -m evaluate)")
    from speechssl.safe_io import load_json

    return load_json(path, "a downstream result.json")


def checkpoint_for(expdir: Path, ckpt: Path | None) -> Path:
    """The checkpoint to evaluate: the given one, else best, else last."""
    if ckpt is not None:
        return ckpt
    for name in (BEST, LAST):
        if (expdir / name).is_file():
            return expdir / name
    raise FileNotFoundError(f"{expdir} has no {BEST} or {LAST}; train it first")
