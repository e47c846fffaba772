"""``speechssl pretrain``: pretrain an upstream model with the shared Trainer.

The run's config is a tree ``{model, task, trainer}``, resolved in this order:

1. the method's preset (``--preset``) for ``model``, the task config's defaults for ``task``,
   and ``Task.trainer_preset(preset)`` (or ``TrainerConfig()``) for ``trainer``;
2. the YAML file of ``--config`` (any subset of the three sections);
3. ``--data`` (sets ``task.data``; optional: a task may get its data from ``--config`` or an
   override such as ``task.data=DIR``, or need no directory at all);
4. the ``KEY=VALUE`` overrides, in order (``trainer.optim.lr=2e-4 model.encoder_layers=4``).

The task is built as ``TaskCls(cfg.task, PretrainContext(method, cfg.model, cfg.trainer.seed))``,
the one Task constructor (:class:`speechssl.train.Task`). The resolved tree is saved as ``EXP/config.yaml`` (reusable with ``--config``). A run whose
``EXP/checkpoint_last.pt`` exists resumes from it. Under ``torchrun --nproc_per_node N speechssl
pretrain ...`` it trains with distributed data parallel.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from speechssl.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from speechssl.registry import Method, get_method, list_methods
from speechssl.train.config import TrainerConfig
from speechssl.train.task import PretrainContext

__all__ = ["add_arguments", "main", "build_config"]

_log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``speechssl pretrain``."""
    try:
        methods = ", ".join(list_methods()) or "(none installed)"
    except Exception as exc:  # a broken third-party entry point must not break --help
        methods = f"(cannot list: {exc})"
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Pretrain an upstream model with the shared Trainer.\n\n"
        f"methods: {methods}\n\n"
        "The config tree {model, task, trainer} starts from the method's preset, then --config\n"
        "(YAML), then --data (task.data), then KEY=VALUE overrides with dotted keys, e.g.\n"
        "  trainer.optim.lr=2e-4 trainer.max_updates=2000 trainer.schedule.name=tri_stage\n"
        "  model.encoder_layers=4 trainer.precision=bf16 'trainer.optim.betas=[0.9,0.98]'\n"
        "Values are parsed as YAML; unknown keys and wrong types are errors naming the key.\n"
        "Writes EXP/config.yaml, checkpoint_last.pt, checkpoint_<updates>.pt, checkpoint_best.pt,\n"
        "train.log, metrics.jsonl and tensorboard/; rerunning resumes from checkpoint_last.pt.\n"
        "Distributed: torchrun --nproc_per_node N $(which speechssl) pretrain ...")
    parser.add_argument("--method", required=True, metavar="NAME", help=f"pretraining method: {methods}")
    parser.add_argument("--preset", required=True, metavar="P",
                        help="model size preset of the method (tiny, base, ...)")
    parser.add_argument("--data", metavar="DIR", type=Path,
                        help="data directory, e.g. <split>.tsv manifests and label files (sets task.data; "
                             "optional when the config gives it)")
    parser.add_argument("--exp-dir", required=True, metavar="EXP", type=Path,
                        help="experiment directory for checkpoints and logs")
    parser.add_argument("--config", metavar="FILE", type=Path, help="YAML file with model/task/trainer sections")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")


def _tree_class(method: Method) -> type:
    if method.task_cls is None or method.task_config_cls is None:
        raise ValueError(f"method {method.name!r} has no pretraining task (task_cls/task_config_cls)")
    return dataclasses.make_dataclass("PretrainConfig", [
        ("model", method.config_cls), ("task", method.task_config_cls), ("trainer", TrainerConfig)])


def build_config(method: Method, preset: str, *, data: str | Path | None = None,
                 config_file: str | Path | None = None, overrides: list[str] = ()) -> Any:
    """The resolved ``{model, task, trainer}`` config of a pretraining run (see module docstring).

    Raises:
        ConfigError: an unknown key or a wrong type (naming it), or a task config without ``data``.
        RegistryError: an unknown preset.
    """
    tree_cls = _tree_class(method)
    model_cfg = method.preset(preset)
    task_fields = {f.name for f in dataclasses.fields(method.task_config_cls)}
    if data is not None and "data" not in task_fields:
        raise ConfigError(f"{method.task_config_cls.__name__} has no 'data' field for --data; "
                          f"its fields: {', '.join(sorted(task_fields))}")
    task_cfg = from_dict(method.task_config_cls, {"data": str(data)} if data is not None else {})
    trainer_cfg = method.task_cls.trainer_preset(preset) if hasattr(method.task_cls, "trainer_preset") else None
    tree = tree_cls(model=model_cfg, task=task_cfg, trainer=trainer_cfg or TrainerConfig())
    if config_file is not None:
        tree = load_yaml(tree_cls, config_file, base=tree)
    if data is not None:
        tree = dataclasses.replace(tree, task=dataclasses.replace(tree.task, data=str(data)))
    return apply_overrides(tree, list(overrides))


def main(args: argparse.Namespace) -> int:
    """Run ``speechssl pretrain``."""
    from speechssl.train.trainer import Trainer

    method = get_method(args.method)
    if method.task_cls is None:
        raise ValueError(f"method {method.name!r} has no pretraining task; methods that pretrain: "
                         f"{', '.join(n for n in list_methods() if get_method(n).task_cls is not None)}")
    if args.data is not None and not args.data.is_dir():
        raise FileNotFoundError(f"--data: no such directory: {args.data}")
    tree = build_config(method, args.preset, data=args.data.resolve() if args.data else None,
                        config_file=args.config, overrides=args.overrides)
    resolved = to_dict(tree)
    if args.print_config:
        print(yaml.safe_dump(resolved, sort_keys=False), end="")
        return 0
    if int(os.environ.get("RANK", "0") or 0) != 0:
        logging.getLogger("speechssl").setLevel(logging.WARNING)  # one rank speaks
    _warn_if_config_changed(args.exp_dir / "config.yaml", resolved)
    task = method.task_cls(tree.task, PretrainContext(method=method.name, model=tree.model, seed=tree.trainer.seed))
    data = getattr(tree.task, "data", None)
    _log.info("pretraining %s (%s, preset %s)%s into %s", method.name, method.modality, args.preset,
              f" on {data}" if data else "", args.exp_dir)
    trainer = Trainer(task, tree.trainer, args.exp_dir, config_tree=resolved)
    trainer.fit()
    return 0


def _warn_if_config_changed(path: Path, resolved: dict[str, Any]) -> None:
    if not path.is_file():
        return
    from speechssl.safe_io import load_yaml as load_yaml_file

    try:  # the run's own file: an unreadable one only skips this warning
        old = load_yaml_file(path) or {}
    except (OSError, ValueError):
        return
    if not isinstance(old, dict):
        return
    changed = [k for k in ("model", "task", "trainer") if old.get(k) != resolved.get(k)]
    if changed:
        _log.warning("%s differs from this run's config in section(s) %s; the new config is used "
                     "(and saved) when resuming", path, ", ".join(changed))
