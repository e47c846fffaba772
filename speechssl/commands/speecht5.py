"""``speechssl speecht5 asr|tts``: fine-tune SpeechT5 through its decoder and score it.

* ``asr``: speech → text (:class:`speechssl.upstream.speecht5.finetune.SpeechT5ASRTask`), then
  greedy decoding of ``--eval-split`` with the last checkpoint; WER and CER (corpus-level, the
  runner's :mod:`speechssl.downstream.metrics`) go to ``EXP/result.json``.
* ``tts``: text → log-mel (:class:`~speechssl.upstream.speecht5.finetune.SpeechT5TTSTask`);
  the teacher-forced mel L1 of ``--eval-split`` before fine-tuning and after it, and the length
  of one greedily generated spectrogram, go to ``EXP/result.json``.

The config tree ``{model, task, trainer}`` resolves as ``speechssl pretrain``'s (preset, then
``--config``, ``--data``, ``KEY=VALUE`` overrides); a rerun resumes from ``EXP/checkpoint_last.pt``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

__all__ = ["add_arguments", "main"]

_log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="speecht5_cmd", metavar="COMMAND", required=True)
    for name, what in (("asr", "speech -> text through the encoder-decoder (teacher-forced CE, greedy decoding, "
                                "WER/CER)"),
                       ("tts", "text -> log-mel through the speech decoder post-net (L1 + stop BCE; mel L1 "
                               "before/after)")):
        p = sub.add_parser(name, help=what, description=f"Fine-tune SpeechT5: {what}. Writes EXP/config.yaml, "
                           "checkpoints, train.log, metrics.jsonl and result.json; a rerun resumes.")
        p.add_argument("--data", required=True, type=Path, metavar="DIR",
                       help="<split>.tsv + <split>.wrd (e.g. the corpus's read/ folder)")
        p.add_argument("--spm-model", required=True, type=Path, metavar="M.model",
                       help="the sentencepiece model (the pretraining run's, when --init is given)")
        p.add_argument("--init", metavar="SRC", default="",
                       help="pretrained SpeechT5: checkpoint_last.pt, model directory or zoo name (default: "
                            "random init from --preset)")
        p.add_argument("--exp-dir", required=True, type=Path, metavar="EXP", help="experiment directory")
        p.add_argument("--preset", default="tiny", help="model preset without --init, and the trainer preset "
                                                        "(default: tiny)")
        p.add_argument("--eval-split", default="test", help="split scored after training (default: test)")
        p.add_argument("--config", type=Path, metavar="FILE", help="YAML file with model/task/trainer sections")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="dotted overrides, e.g. trainer.max_updates=200 task.label_smoothing=0")


def _method(kind: str) -> Any:
    from speechssl.registry import get_method
    from speechssl.upstream.speecht5.finetune import SpeechT5ASRTask, SpeechT5FinetuneConfig, SpeechT5TTSTask

    task_cls = SpeechT5ASRTask if kind == "asr" else SpeechT5TTSTask
    return dataclasses.replace(get_method("speecht5"), task_cls=task_cls, task_config_cls=SpeechT5FinetuneConfig)


def _write_result(exp: Path, result: dict[str, Any]) -> None:
    from speechssl.atomic import atomic_write_text

    atomic_write_text(exp / "result.json", json.dumps(result, indent=1, sort_keys=True) + "\n")
    _log.info("result: %s", json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))}))


def _eval_tts(task: Any, model: Any, split: str) -> dict[str, float]:
    from speechssl.upstream.speecht5.finetune import mel_l1

    ds = task.dataset(split)
    model.eval()
    torch.manual_seed(0)  # the pre-net's consistent dropout also runs at inference
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ds), 8):
            batch = task.collate([ds[i] for i in range(start, min(start + 8, len(ds)))])
            total += float(mel_l1(model(batch), batch["mels"]).sum())
            n += len(batch["id"])
    return {"mel_l1": total / max(n, 1), "utterances": n}


def main(args: argparse.Namespace) -> int:
    from speechssl import hub
    from speechssl.commands.pretrain import build_config
    from speechssl.config import to_dict
    from speechssl.downstream.metrics import cer, wer
    from speechssl.train.task import PretrainContext
    from speechssl.train.trainer import Trainer
    from speechssl.upstream.speecht5.finetune import SpeechT5Seq2Seq, transcribe

    kind = args.speecht5_cmd
    if not args.data.is_dir():
        raise FileNotFoundError(f"--data: no such directory: {args.data}")
    if not args.spm_model.is_file():
        raise FileNotFoundError(f"--spm-model: no such file: {args.spm_model}")
    method = _method(kind)
    overrides = [f"task.spm_model={args.spm_model.resolve()}", f"task.init={args.init}", *args.overrides]
    tree = build_config(method, args.preset, data=args.data.resolve(), config_file=args.config, overrides=overrides)
    resolved = to_dict(tree)
    ctx = PretrainContext(method="speecht5", model=tree.model, seed=tree.trainer.seed)
    task = method.task_cls(tree.task, ctx)
    _log.info("speecht5 %s fine-tuning on %s into %s", kind, args.data, args.exp_dir)
    result: dict[str, Any] = {"task": kind, "data": str(args.data), "init": args.init, "split": args.eval_split}
    if kind == "tts":  # the starting point, scored with the same data and seed as the end
        torch.manual_seed(tree.trainer.seed)
        result["before"] = _eval_tts(task, task.build_model(), args.eval_split)
    trainer = Trainer(task, tree.trainer, args.exp_dir, config_tree=resolved)
    trainer.fit()
    upstream = hub.load(args.exp_dir / "checkpoint_last.pt")
    result["updates"] = int(tree.trainer.max_updates)
    if kind == "asr":
        ds = task.dataset(args.eval_split)
        hyps, refs = transcribe(upstream, ds, task.sp)
        result.update(wer=100.0 * wer(hyps, refs), cer=100.0 * cer(hyps, refs), utterances=len(refs),
                      examples=[{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:5]])
    else:
        result["after"] = _eval_tts(task, SpeechT5Seq2Seq(upstream), args.eval_split)
        ds = task.dataset(args.eval_split)
        item = ds[0]
        torch.manual_seed(0)
        mel = upstream.generate_speech(item["tokens"][None], torch.tensor([len(item["tokens"])]),
                                       max_steps=2 * int(ds.sizes[0]) // 160 // upstream.config.reduction_factor + 10)
        result["generated_frames"] = int(mel[0].shape[0])
        result["reference_frames"] = int(ds.sizes[0]) // 160
    _write_result(args.exp_dir, result)
    return 0
