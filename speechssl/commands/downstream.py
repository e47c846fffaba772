"""``speechssl downstream``: SUPERB-style evaluation with s3prl's vocabulary.

    speechssl downstream -m train -u fbank -d ks --data CORPUS -n ks_fbank
    speechssl downstream -m train -u exp/hubert/iter2/model -d pr --data CORPUS
    speechssl downstream -m train -u random:hubert@tiny -d sid --data CORPUS -o trainer.max_updates=500
    speechssl downstream -m evaluate -e exp/downstream/ks_fbank
    speechssl downstream -m train -a -n ks_fbank ...          # resume where it stopped
    speechssl downstream -m train -u fbank -d ks --data CORPUS --lr-sweep 1e-4,1e-3,1e-2
    speechssl downstream report exp/downstream/* --out exp/downstream/report
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

_log = logging.getLogger(__name__)

_EPILOG = """\
upstreams (-u):
  fbank | mfcc | spectrogram      surface-feature baselines (Kaldi-compatible, 100 frames/s);
                                  fbank is 80 log-mel bins + deltas + delta-deltas = 240 dims
                                  (s3prl's baseline; `speechssl features dump --feature fbank`
                                  writes the 80 bins alone); mfcc 13 + deltas = 39 dims;
                                  spectrogram 257 dims, no deltas
  random:<method>[@preset]        a randomly initialised model, e.g. random:hubert@tiny
  PATH                            a model directory (speechssl hub format) or training checkpoint
  NAME                            a model in the local zoo (speechssl hub list)

overrides (-o), comma separated or repeated:
  trainer.max_updates=500  trainer.optim.lr=1e-3
  trainer.max_tokens=20000 (batch bound in 10 ms steps of audio, whatever the upstream's frame rate)
  featurizer.layer=6  featurizer.normalize=true  cache.dtype=float16  task.head.hidden_dim=128

tasks (-d): {tasks}  (speechssl downstream tasks describes them)

s3prl's flags, and what they map to:
  -f / --upstream_trainable            fine-tune the upstream with the head (no feature cache)
  -l N / --upstream_layer_selection N  use hidden state N only (0 = the first layer's input;
                                       negative counts from the end) = -o featurizer.layer=N;
                                       without it: a learned weighted sum of all hidden states
  -s hidden_states|last_hidden_state   --upstream_feature_selection: all hidden states (default),
                                       or the last one only (= -l -1)
  --verbose                            debug logging and the resolved config
-o trainer.patience=N stops a head after N validations without a better trainer.best_metric
(default 0: train to trainer.max_updates); --lr-sweep trains one head per lr under
EXPDIR/lr_sweep/lr_<lr>/ and keeps the lr that scores best on the validation split.
"""

#: s3prl's -s values this runner has: hidden_states (every layer) and last_hidden_state.
FEATURE_SELECTIONS = ("hidden_states", "last_hidden_state")


def _task_names() -> str:
    from speechssl.registry import list_downstreams

    try:
        return " ".join(list_downstreams())
    except Exception:  # noqa: BLE001 - help must render even when a plug-in is broken
        return "ks sid asv ic sf pr asr qbe sd er"


def _lr_list(text: str) -> list[float]:
    """``1e-4,1e-3,1e-2`` -> [1e-4, 1e-3, 1e-2] (argparse type of --lr-sweep)."""
    try:
        lrs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated learning rates like 1e-4,1e-3,1e-2, "
                                         f"got {text!r}") from None
    if not lrs or any(not (0 < lr < float("inf")) for lr in lrs):
        raise argparse.ArgumentTypeError(f"expected positive learning rates like 1e-4,1e-3,1e-2, got {text!r}")
    if len(set(lrs)) != len(lrs):
        raise argparse.ArgumentTypeError(f"a learning rate is listed twice in {text!r}")
    return lrs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "SUPERB-style evaluation of a frozen upstream, with s3prl's flags: -m train trains a task's head\n"
        "on the upstream's cached hidden states (then scores the best checkpoint on --test-split),\n"
        "-m evaluate scores a trained one; result.json goes into the experiment directory.\n"
        "Sub-verbs: `report` (a table and plots from result.json files), `tasks` (the registered tasks).")
    parser.epilog = _EPILOG.format(tasks=_task_names())
    parser.add_argument("-m", "--mode", choices=["train", "evaluate"], default="train",
                        help="train a head (then evaluate the best checkpoint on test), or evaluate one")
    parser.add_argument("-u", "--upstream", help="upstream to evaluate (see below)")
    parser.add_argument("-k", "--upstream_ckpt", "--upstream-ckpt", dest="upstream_ckpt",
                        help="load the upstream from this model directory or checkpoint (-u names it)")
    parser.add_argument("-d", "--downstream", dest="task", help="downstream task")
    parser.add_argument("-n", "--expname", help="experiment name: the directory exp/downstream/NAME")
    parser.add_argument("-p", "--expdir", help="experiment directory (overrides -n)")
    parser.add_argument("-e", "--past_exp", "--past-exp", dest="past_exp",
                        help="an experiment directory or checkpoint: train resumes it, evaluate scores it")
    parser.add_argument("-a", "--auto_resume", "--auto-resume", dest="auto_resume", action="store_true",
                        help="resume from the experiment directory's checkpoint_last.pt if there is one")
    parser.add_argument("-c", "--config", help="YAML file with sections run, task, trainer")
    parser.add_argument("-o", "--override", action="append", default=[],
                        help="KEY=VALUE[,KEY=VALUE...] config overrides (repeatable)")
    parser.add_argument("-t", "--test-split", default="test", help="split evaluated at the end (default: test)")
    parser.add_argument("--data", help="corpus root directory (its subsets are subfolders)")
    parser.add_argument("--seed", type=int, help="seed of the head and the data order (default 1)")
    parser.add_argument("--device", help="device for the upstream and training: auto, cpu, cuda, cuda:1")
    parser.add_argument("-f", "--upstream-trainable", "--upstream_trainable", dest="upstream_trainable",
                        action="store_true", default=None, help="fine-tune the upstream (disables the feature cache)")
    parser.add_argument("-l", "--upstream_layer_selection", "--upstream-layer-selection", "--layer",
                        dest="layer", type=int, metavar="N",
                        help="use hidden state N only (= -o featurizer.layer=N); default: a learned weighted sum")
    parser.add_argument("-s", "--upstream_feature_selection", "--upstream-feature-selection",
                        dest="feature_selection", metavar="KEY",
                        help="s3prl's feature selection: hidden_states (default: all layers) or "
                             "last_hidden_state (the last layer only, = -l -1)")
    parser.add_argument("--lr-sweep", "--lr_sweep", dest="lr_sweep", type=_lr_list, metavar="LR,LR,...",
                        help="train one head per learning rate (e.g. 1e-4,1e-3,1e-2) on the cached features, "
                             "choose by the validation metric, report that lr's test score")
    parser.add_argument("--verbose", dest="downstream_verbose", action="store_true",
                        help="debug logging (as 'speechssl -v') and the resolved config")
    parser.add_argument("--cache-dir", help="feature cache root (default: <expdir>/../.feature_cache)")
    parser.add_argument("--no-cache", action="store_true", help="run the upstream on every batch")
    sub = parser.add_subparsers(dest="downstream_verb", metavar="{report,tasks}")
    rep = sub.add_parser("report", help="markdown table + plots from experiment directories",
                         description="Collect result.json files into OUT/report.md (a task x upstream table: "
                                     "mean ± std over runs where a cell has several, swept learning rates "
                                     "marked, the corpus and its preset named), OUT/report.json and "
                                     "OUT/metrics.png (bars with error bars and chance / fbank / best lines).")
    rep.add_argument("exp_dirs", nargs="+", help="experiment directories (or parents of them)")
    rep.add_argument("--out", required=True, help="output directory for report.md and the plots")
    sub.add_parser("tasks", help="list the registered downstream tasks with metric and direction",
                   description="List the registered downstream tasks, one per line: name (the -d value), "
                               "metric (result.json's 'metric'), whether higher or lower is better, and what "
                               "the task is (its data and label files).")


def main(args: argparse.Namespace) -> int:
    if args.downstream_verb == "report":
        from speechssl.downstream.report import write_report

        path = write_report(args.exp_dirs, args.out)
        _log.info("report written to %s", path)
        print(path.read_text())
        return 0
    if args.downstream_verb == "tasks":
        from speechssl.registry import get_downstream, list_downstreams

        for name in list_downstreams():
            spec = get_downstream(name)
            arrow = "higher is better" if spec.higher_is_better else "lower is better"
            print(f"{name:4s} {spec.metric:10s} ({arrow})  {spec.description}")
        return 0
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from speechssl.downstream import runner
    from speechssl.log import add_file_handler

    if args.downstream_verbose:
        logging.getLogger("speechssl").setLevel(logging.DEBUG)
    overrides = list(args.override)
    selection = args.feature_selection
    if selection is not None and selection not in FEATURE_SELECTIONS:
        raise ValueError(f"-s/--upstream_feature_selection {selection!r} is not supported: this runner reads "
                         f"{' or '.join(FEATURE_SELECTIONS)} (choose one layer with -l N)")
    if selection == "last_hidden_state" and args.layer is not None and args.layer != -1:
        raise ValueError(f"-s last_hidden_state selects the last layer but -l {args.layer} another; pass one of them")
    if args.layer is not None:
        overrides.append(f"featurizer.layer={args.layer}")
    elif selection == "last_hidden_state":
        overrides.append("featurizer.layer=-1")
    if args.cache_dir:
        overrides.append(f"cache.dir={args.cache_dir}")
    if args.no_cache:
        overrides.append("cache.enabled=false")
    flags = {"task": args.task, "upstream": args.upstream, "upstream_ckpt": args.upstream_ckpt,
             "data": args.data, "seed": args.seed, "device": args.device,
             "upstream_trainable": args.upstream_trainable, "lr_sweep": args.lr_sweep}
    if args.device:
        overrides.append(f"trainer.device={args.device}")
    base_tree, ckpt = None, None
    if args.past_exp:
        expdir, ckpt = runner.find_past_exp(args.past_exp)
        base_tree = runner.saved_tree(expdir)
    elif args.expdir:
        expdir = Path(args.expdir)
    else:
        expdir = None
    run_cfg, task_cfg, trainer, spec = runner.resolve_configs(
        base_tree=base_tree, config_file=args.config, overrides=overrides, flags=flags)
    if expdir is None:
        expdir = runner.default_expdir(run_cfg, args.expname)
    held = [expdir / "checkpoint_last.pt"] + [runner.sweep_dir(expdir, lr) / "checkpoint_last.pt"
                                              for lr in run_cfg.lr_sweep]
    if args.mode == "train" and not args.past_exp and any(p.exists() for p in held) and not args.auto_resume:
        raise ValueError(f"{expdir} already holds a run (checkpoint_last.pt); pass -a to resume it, "
                         f"-e {expdir} to resume with its saved config, or choose another -n/--expdir")
    if args.mode == "evaluate" and spec.task_cls.trains and not args.past_exp and not run_cfg.lr_sweep:
        if not (expdir / "checkpoint_best.pt").exists() and not (expdir / "checkpoint_last.pt").exists():
            raise ValueError("-m evaluate needs a trained experiment: pass -e EXPDIR|CHECKPOINT")
    if not run_cfg.upstream and not run_cfg.upstream_ckpt:
        raise ValueError("no upstream given: pass -u UPSTREAM (fbank, mfcc, spectrogram, "
                         "random:<method>[@preset], a model directory or a zoo name)")
    expdir.mkdir(parents=True, exist_ok=True)
    handler = add_file_handler(expdir / "runner.log")
    try:
        r = runner.prepare(run_cfg, task_cfg, trainer, spec, expdir)
        if args.downstream_verbose:
            import yaml

            _log.debug("resolved config:\n%s", yaml.safe_dump(r.config_tree(), sort_keys=False))
        if run_cfg.lr_sweep:
            result = runner.sweep(r, mode=args.mode, test_split=args.test_split)
        elif args.mode == "train":
            result = runner.train(r, test_split=args.test_split)
        else:
            ckpt_path = runner.checkpoint_for(expdir, ckpt) if spec.task_cls.trains else None
            result = runner.evaluate(r, ckpt_path, split=args.test_split)
    finally:
        logging.getLogger("speechssl").removeHandler(handler)
        handler.close()
    arrow = "↑" if result["higher_is_better"] else "↓"
    print(f"{result['task']}\t{result['upstream']['name']}\t{result['metric']} {arrow}\t{result['value']:.4f}"
          f"\t{expdir}")
    return 0
