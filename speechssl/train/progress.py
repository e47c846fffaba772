"""Training logs: ``train.log``, ``metrics.jsonl``, tensorboard scalars and a tqdm progress bar.

Only rank 0 writes. Files in the experiment directory:

- ``train.log``: the ``speechssl`` log records of the run (plain text, appended across resumes).
- ``metrics.jsonl``: one JSON object per update (``{"split": "train", "update": n, "loss": ...}``)
  and per validation (``"split": "valid"``), full float precision. On a resume the Trainer
  calls :meth:`TrainingLog.rewind`, which drops the records after the checkpoint's update (and
  half-written lines), so no update appears twice.
- ``tensorboard/``: scalars ``train/*`` every ``log_every_updates`` updates and ``valid/*``.

Each progress line of ``train.log`` reads ``epoch E update U/TOTAL (P%) | elapsed 1m05s |
eta 2m10s | loss ... | ups ...``: TOTAL is the planned number of updates (``max_updates``, or
``max_epochs`` x updates per epoch, whichever ends first), elapsed counts this process's
training time and the ETA extrapolates its rate (a resumed run counts from where it resumed).
Early stopping can end a run before TOTAL.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from speechssl.atomic import atomic_write_text

__all__ = ["TrainingLog", "format_duration"]

_log = logging.getLogger(__name__)
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TrainingLog:
    """Everything the Trainer reports, routed to files, tensorboard and the progress bar.

    Args:
        exp_dir: the experiment directory.
        enabled: False on ranks other than 0 (then every method is a no-op).
        tensorboard: write tensorboard scalars.
        progress_bar: show a tqdm bar (also requires stderr to be a terminal).
    """

    def __init__(self, exp_dir: str | Path, *, enabled: bool, tensorboard: bool, progress_bar: bool) -> None:
        self.exp_dir = Path(exp_dir)
        self.enabled = enabled
        self._want_tb = tensorboard
        self._want_bar = progress_bar
        self._writer: Any = None
        self._bar: Any = None
        self._metrics: Any = None
        self._handler: logging.Handler | None = None
        self._restore: list[tuple[Any, int]] = []
        self._window: dict[str, float] = {}
        self._window_start = time.monotonic()
        self._total = 0
        self._start_update = 0
        self._start = time.monotonic()

    def plan(self, total_updates: int, done_updates: int) -> None:
        """Start the clock: ``total_updates`` planned (0: unknown), ``done_updates`` done before."""
        self._total = int(total_updates)
        self._start_update = int(done_updates)
        self._start = self._window_start = time.monotonic()

    # -- lifetime ---------------------------------------------------------------------------
    def open(self) -> None:
        """Open the log files (and tensorboard) for appending."""
        if not self.enabled:
            return
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        self._attach_file_handler()
        path = self.exp_dir / "metrics.jsonl"
        torn = False
        if path.is_file() and path.stat().st_size:
            with open(path, "rb") as f:
                f.seek(-1, 2)
                torn = f.read(1) != b"\n"
        self._metrics = open(path, "a", encoding="utf-8")
        if torn:  # a killed run may have left half a line; start the next record on its own line
            self._metrics.write("\n")
        if self._want_tb:
            from torch.utils.tensorboard import SummaryWriter  # lazy: pulls in tensorboard

            self._writer = SummaryWriter(str(self.exp_dir / "tensorboard"))

    def rewind(self, update: int) -> int:
        """Cut ``metrics.jsonl`` back to the records of updates ``<= update`` (the resume point).

        Records of later updates (written after the checkpoint a run resumes from) and
        half-written lines are dropped; the file is rewritten atomically. Call after
        :meth:`open`.

        Returns:
            the number of records dropped.
        """
        path = self.exp_dir / "metrics.jsonl"
        if not self.enabled or self._metrics is None or not path.is_file():
            return 0
        kept, dropped = [], 0
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    at = int(record.get("update", 0)) if isinstance(record, dict) else None
                except (ValueError, TypeError):
                    at = None
                if at is None or at > update:
                    dropped += 1
                else:
                    kept.append(line if line.endswith("\n") else line + "\n")
        if not dropped:
            return 0
        self._metrics.close()
        atomic_write_text(path, "".join(kept))
        self._metrics = open(path, "a", encoding="utf-8")
        _log.info("%s: dropped %d record(s) after update %d, written by the interrupted run after the checkpoint "
                  "it resumes from", path, dropped, update)
        return dropped

    def close(self) -> None:
        """Close the bar, files and tensorboard writer; detach the log handler."""
        self.end_epoch()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._handler is not None:
            logger = logging.getLogger("speechssl")
            logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None
            for obj, level in reversed(self._restore):
                obj.setLevel(level)
            self._restore = []

    def _attach_file_handler(self) -> None:
        # train.log must hold INFO records even when the console shows only warnings: lower the
        # speechssl logger to INFO and raise its other handlers to the old level (undone in close()).
        logger = logging.getLogger("speechssl")
        old = logger.getEffectiveLevel()
        if old > logging.INFO:
            self._restore.append((logger, logger.level))
            for h in logger.handlers:
                self._restore.append((h, h.level))
                h.setLevel(max(h.level, old))
            logger.setLevel(logging.INFO)
        handler = logging.FileHandler(self.exp_dir / "train.log", encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        self._handler = handler

    # -- progress bar -----------------------------------------------------------------------
    def start_epoch(self, epoch: int, total: int, initial: int) -> None:
        """Show a bar over the epoch's ``total`` updates, ``initial`` of them done already."""
        self.end_epoch()
        if not (self.enabled and self._want_bar and sys.stderr.isatty()):
            return
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=initial, desc=f"epoch {epoch}", unit="upd", dynamic_ncols=True,
                         leave=False)

    def end_epoch(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # -- records ----------------------------------------------------------------------------
    def update(self, stats: dict[str, float], *, log_now: bool) -> None:
        """Record one update's stats (``update``, ``epoch``, ``loss``, ``lr``, ``sample_size``, ...).

        Appends to ``metrics.jsonl`` and the window averaged into the next ``log_now`` line.
        """
        if not self.enabled:
            return
        self._write_json({"split": "train", **stats})
        for k, v in stats.items():
            if k not in ("update", "epoch"):
                self._window[k] = self._window.get(k, 0.0) + float(v)
        self._window["_n"] = self._window.get("_n", 0.0) + 1
        if self._bar is not None:
            self._bar.update(1)
            elapsed = max(time.monotonic() - self._window_start, 1e-9)
            self._bar.set_postfix(loss=f"{stats['loss']:.4g}", lr=f"{stats['lr']:.3g}",
                                  tok_s=f"{self._window.get('sample_size', 0.0) / elapsed:.4g}", refresh=False)
        if log_now:
            self._flush_window(int(stats["update"]), int(stats["epoch"]))

    def _flush_window(self, update: int, epoch: int) -> None:
        n = self._window.pop("_n", 0.0)
        if not n:
            return
        elapsed = max(time.monotonic() - self._window_start, 1e-9)
        sample_size = self._window.get("sample_size", 0.0)
        means = {k: v / n for k, v in self._window.items() if k not in ("sample_size", "lr")}
        means["lr"] = self._window.get("lr", 0.0) / n
        means["ups"] = n / elapsed
        means["tokens_per_s"] = sample_size / elapsed
        _log.info("epoch %d update %s | %s", epoch, self.position(update),
                  " | ".join(f"{k} {_fmt(v)}" for k, v in means.items()))
        self.scalars("train", means, update)
        self._window = {}
        self._window_start = time.monotonic()

    def position(self, update: int, now: float | None = None) -> str:
        """``"U/TOTAL (P%) | elapsed 1m05s | eta 2m10s"`` (just ``"U | elapsed ..."`` without a total)."""
        elapsed = (time.monotonic() if now is None else now) - self._start
        if not self._total:
            return f"{update} | elapsed {format_duration(elapsed)}"
        text = f"{update}/{self._total} ({100.0 * update / self._total:.0f}%) | elapsed {format_duration(elapsed)}"
        done = update - self._start_update
        if done > 0:
            text += f" | eta {format_duration(max(self._total - update, 0) * elapsed / done)}"
        return text

    def valid(self, stats: dict[str, float], *, update: int, epoch: int, split: str) -> None:
        """Record validation results."""
        if not self.enabled:
            return
        self._write_json({"split": split, "update": update, "epoch": epoch, **stats})
        _log.info("valid on %r | epoch %d update %d | %s", split, epoch, update,
                  " | ".join(f"{k} {_fmt(v)}" for k, v in stats.items()))
        self.scalars(split, stats, update)

    def scalars(self, prefix: str, stats: dict[str, float], step: int) -> None:
        if self._writer is None:
            return
        for k, v in stats.items():
            self._writer.add_scalar(f"{prefix}/{k}", float(v), step)
        self._writer.flush()

    def _write_json(self, record: dict[str, Any]) -> None:
        if self._metrics is None:
            return
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in record.items()}
        self._metrics.write(json.dumps(clean) + "\n")
        self._metrics.flush()


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m`` (seconds rounded; never negative)."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
