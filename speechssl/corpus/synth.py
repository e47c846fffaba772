"""Build the embedded corpus: render every planned item in parallel, then write labels and manifests.

Stages (each resumable):

1. Render: every item not yet done is synthesized by a pool of worker processes (one
   :class:`~speechssl.corpus.espeak.Espeak` per process) and written as
   ``<subset>/wav/<uid>.wav`` then ``.cache/meta/<subset>/<uid>.json`` (its alignment), both
   atomically; the meta file marks the item done. An interrupted run leaves whole files only.
2. Finalize: label files and dictionaries, then the manifests, then ``speakers.json``,
   ``README.md`` and, last, ``corpus.json``, which marks the corpus complete. A rerun over a
   complete corpus does nothing.

Output bytes depend only on the preset and the seed, never on ``jobs``.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from speechssl.atomic import atomic_write_text
from speechssl.audio import save as save_audio
from speechssl.corpus.align import SILENCE, Segment, frame_labels
from speechssl.corpus.card import write_card
from speechssl.corpus.espeak import Espeak
from speechssl.corpus.labels import class_dict
from speechssl.corpus.plan import KW_SILENCE, KW_UNKNOWN, SUBSETS, Plan, Preset, make_plan
from speechssl.corpus.render import SAMPLE_RATE, Item, render
from speechssl.corpus.speakers import STYLES
from speechssl.corpus.text import TextBank
from speechssl.data.manifest import Dictionary, build_dict, read_manifest, write_dict, write_labels, write_manifest
from speechssl.log import progress_bar
from speechssl.version import __version__

__all__ = ["synthesize_corpus", "render_items", "is_complete"]

_log = logging.getLogger(__name__)
_CARD = "corpus.json"
_CACHE = ".cache"
_WAV_DIR = "wav"


def _wav_path(out: Path, item: Item) -> Path:
    return out / item.subset / _WAV_DIR / f"{item.uid}.wav"


def _meta_path(out: Path, item: Item) -> Path:
    return out / _CACHE / "meta" / item.subset / f"{item.uid}.json"


class _Worker:
    """Renders items in one process; holds that process's espeak instance."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.tts = Espeak()

    def __call__(self, item: Item) -> tuple[str, int]:
        result = render(item, self.tts)
        save_audio(_wav_path(self.out, item), result.audio, SAMPLE_RATE)
        atomic_write_text(_meta_path(self.out, item), json.dumps(result.to_meta()))
        return item.uid, int(result.audio.shape[0])


# One _Worker per pool process, created by the pool initializer (espeak's C state is per process).
_PROCESS_WORKER: _Worker | None = None


def _init_process(out: str) -> None:
    global _PROCESS_WORKER
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _PROCESS_WORKER = _Worker(Path(out))


def _run_in_process(item: Item) -> tuple[str, int]:
    assert _PROCESS_WORKER is not None, "pool initializer did not run"
    return _PROCESS_WORKER(item)


def _mp_context() -> multiprocessing.context.BaseContext:
    # fork is cheap and needs no re-import; platforms without it spawn.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods and sys.platform != "darwin" else "spawn")


def render_items(items: list[Item], out: str | Path, *, jobs: int = 1, progress: bool = True) -> int:
    """Render the items of ``items`` that are not done yet; returns how many were rendered."""
    out = Path(out)
    todo = [it for it in items if not _meta_path(out, it).is_file()]
    if not todo:
        return 0
    bar = progress_bar(total=len(todo), desc="synthesizing", unit="utt", disable=not progress, dynamic_ncols=True)
    try:
        if jobs <= 1 or len(todo) == 1:
            worker = _Worker(out)
            for item in todo:
                worker(item)
                bar.update(1)
        else:
            ctx = _mp_context()
            with ctx.Pool(processes=min(jobs, len(todo)), initializer=_init_process, initargs=(str(out),)) as pool:
                for _ in pool.imap_unordered(_run_in_process, todo, chunksize=4):
                    bar.update(1)
    finally:
        bar.close()
    return len(todo)


def is_complete(out: str | Path) -> bool:
    """Whether ``out`` holds a finished corpus (its ``corpus.json`` exists)."""
    return (Path(out) / _CARD).is_file()


def _check_card(out: Path, preset: str, seed: int, sessions: bool) -> bool:
    """True if ``out`` holds the finished corpus ``preset``/``seed``/``sessions``; raises if it
    holds another one."""
    card = out / _CARD
    if not card.is_file():
        return False
    have = json.loads(card.read_text(encoding="utf-8"))
    have_sessions = bool(have.get("session_variability", False))
    if have.get("preset") == preset and have.get("seed") == seed and have_sessions == sessions:
        return True
    raise ValueError(f"{out} already holds a corpus with preset {have.get('preset')!r}, seed "
                     f"{have.get('seed')!r} and session variability {'on' if have_sessions else 'off'}, not "
                     f"{preset!r}/{seed}/{'on' if sessions else 'off'}; choose another --out directory or delete it")


def _check_unfinished(out: Path, plan: Plan) -> None:
    """Raise if ``out`` holds the unfinished build of another plan, or foreign corpus folders."""
    stamp = out / _CACHE / "plan.json"
    if stamp.is_file():
        if json.loads(stamp.read_text(encoding="utf-8")) != json.loads(json.dumps(plan.describe())):
            raise ValueError(f"{out} holds an unfinished corpus of another preset/seed/session setting ({stamp}); "
                             "choose another --out directory or delete it")
    elif out.exists() and any(p.name in SUBSETS for p in out.iterdir()):
        raise ValueError(f"{out} has corpus folders but no {_CACHE}/plan.json or {_CARD}: "
                         "it was not made by this command; choose an empty --out directory")


def synthesize_corpus(out: str | Path, preset: str | Preset = "tiny", seed: int = 0, *, jobs: int = 1,
                      progress: bool = True, sessions: bool = True) -> Path:
    """Build (or finish building) the corpus ``preset`` with ``seed`` in ``out``.

    Args:
        out: output directory (created).
        preset: ``tiny`` (~10 min), ``small`` (~2.9 h), ``base`` (~12 h), or a custom :class:`Preset`.
        seed: everything random derives from it.
        jobs: worker processes.
        progress: show a progress bar.
        sessions: session variability (default on): every utterance gets its own prosody jitter
            and channel equaliser (see :func:`speechssl.corpus.plan.make_plan`).

    Returns:
        ``out``. The layout is described in ``out/README.md`` and :mod:`speechssl.corpus`.

    Raises:
        ValueError: unknown preset, or ``out`` holds another corpus.
    """
    out = Path(out)
    name = preset.name if isinstance(preset, Preset) else preset
    if _check_card(out, name, seed, sessions):
        _log.info("%s already holds the complete %s corpus (seed %d): nothing to do", out, name, seed)
        shutil.rmtree(out / _CACHE, ignore_errors=True)  # left only if a run died after its card
        return out
    plan = make_plan(preset, seed, sessions)
    _check_unfinished(out, plan)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / _CACHE / "plan.json", json.dumps(plan.describe(), sort_keys=True))
    _log.info("corpus %s (seed %d): %d utterances, %d speakers -> %s", name, seed, len(plan.items),
              len(plan.speakers), out)
    n = render_items(plan.items, out, jobs=jobs, progress=progress)
    _log.info("rendered %d utterances (%d were already done)", n, len(plan.items) - n)
    metas = {it.uid: json.loads(_meta_path(out, it).read_text(encoding="utf-8")) for it in plan.items}
    stats = _finalize(out, plan, metas)
    write_card(out, plan, stats, espeak_version=Espeak().version, speechssl_version=__version__)
    shutil.rmtree(out / _CACHE, ignore_errors=True)
    _log.info("corpus complete: %.2f h in %s", stats["total_samples"] / SAMPLE_RATE / 3600, out)
    return out


# -- finalisation ------------------------------------------------------------------------------

_TOKEN_LABELS = ("wrd", "ltr", "slot")  # count-ordered dictionaries (fairseq); others are classes


def _finalize(out: Path, plan: Plan, metas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    stats: dict[str, Any] = {"total_samples": 0, "subsets": {}}
    kw_order = list(TextBank().keywords)
    for subset in SUBSETS:
        items = plan.subset(subset)
        folder = out / subset
        splits = list(dict.fromkeys(it.split for it in items))
        label_names = list(items[0].labels)
        rows: dict[str, dict[str, list[str]]] = {name: {} for name in label_names}
        for it in items:
            for name in label_names:
                rows[name].setdefault(it.split, []).append(it.labels[name])
        if subset == "read":
            rows["phn"], rows["phn_ali"] = {}, {}
            phone_rows: dict[str, list[list[str]]] = {}
            frames_rows: dict[str, list[list[str]]] = {}
            for it in items:
                segs = [Segment(p, s, e) for p, s, e in metas[it.uid]["segments"]]
                phone_rows.setdefault(it.split, []).append([s.phone for s in segs if s.phone != SILENCE])
                frames_rows.setdefault(it.split, []).append(frame_labels(segs, metas[it.uid]["num_samples"]))
            phn_dict = _phone_dict(phone_rows, frames_rows)
            for split in splits:
                rows["phn"][split] = [" ".join(p) for p in phone_rows[split]]
                rows["phn_ali"][split] = [" ".join(str(phn_dict.index(f)) for f in fr) for fr in frames_rows[split]]
            write_dict(folder / "dict.phn.txt", phn_dict)
            stats["phones"] = list(phn_dict.symbols)
        for name, by_split in rows.items():
            for split in splits:
                write_labels(folder / f"{split}.{name}", by_split[split])
            if name in ("phn", "phn_ali"):
                continue
            all_rows = [r for split in splits for r in by_split[split]]
            if name in _TOKEN_LABELS:
                dictionary = build_dict(all_rows, sort="count")
            else:
                order = {"kw": kw_order + [KW_UNKNOWN, KW_SILENCE], "style": [s.name for s in STYLES]}
                dictionary = class_dict(all_rows, order.get(name, ()))
            write_dict(folder / f"dict.{name}.txt", dictionary)
        if subset == "verification":
            atomic_write_text(folder / "trials.txt", "".join(f"{lab} {a} {b}\n" for lab, a, b in plan.trials))
        if subset == "qbe":
            _write_qbe_truth(folder, items, metas)
        sub_stats: dict[str, Any] = {}
        for split in splits:  # manifests last: their presence means the split's labels are there
            split_items = [it for it in items if it.split == split]
            sizes = [metas[it.uid]["num_samples"] for it in split_items]
            write_manifest(folder / f"{split}.tsv", _WAV_DIR,
                           ((f"{it.uid}.wav", n) for it, n in zip(split_items, sizes)))
            speakers = {it.labels["spk"] for it in split_items}
            sub_stats[split] = {"utterances": len(split_items), "samples": sum(sizes),
                                "hours": round(sum(sizes) / SAMPLE_RATE / 3600, 4),
                                "speakers": len(speakers - {"none"})}
            stats["total_samples"] += sum(sizes)
        stats["subsets"][subset] = {"splits": sub_stats, "labels": sorted(rows)}
    stats["pretrain"] = _write_pretrain_view(out)
    return stats


# The pretraining view: train/valid audio of the subsets whose train speakers are the training
# speakers (verification and qbe are evaluation-only), and read's aligned test split.
_PRETRAIN_SUBSETS = {"train": ("read", "keywords", "commands"), "valid": ("read", "keywords", "commands"),
                     "test": ("read",)}


def _write_pretrain_view(out: Path) -> dict[str, Any]:
    """Write ``pretrain/{train,valid,test}.tsv`` (manifests over the other subsets' audio) and
    the test split's alignments; returns what the card records of it."""
    folder = out / "pretrain"
    splits = {}
    for split, subsets in _PRETRAIN_SUBSETS.items():
        rows = []
        for subset in subsets:
            m = read_manifest(out / subset / f"{split}.tsv")
            rows += [(f"{subset}/{_WAV_DIR}/{p}", n) for p, n in zip(m.paths, m.sizes)]
        if split == "test":
            for name in ("test.phn_ali", "dict.phn.txt"):
                atomic_write_text(folder / name, (out / "read" / name).read_text(encoding="utf-8"))
        write_manifest(folder / f"{split}.tsv", "..", rows)
        splits[split] = {"subsets": list(subsets), "utterances": len(rows),
                         "hours": round(sum(n for _, n in rows) / SAMPLE_RATE / 3600, 4)}
    return {"splits": splits}


def _phone_dict(phone_rows: dict[str, list[list[str]]], frames_rows: dict[str, list[list[str]]]) -> Dictionary:
    """``sil`` first, then phones by decreasing frequency (ties by symbol); counts are frames."""
    frames = [" ".join(fr) for rows in frames_rows.values() for fr in rows]
    phones = {p for rows in phone_rows.values() for r in rows for p in r}
    counted = build_dict(frames, sort="count")
    counts = dict(zip(counted.symbols, counted.counts))
    order = [SILENCE] + sorted(phones | (set(counts) - {SILENCE}), key=lambda p: (-counts.get(p, 0), p))
    return Dictionary(order, [counts.get(p, 0) for p in order])


def _write_qbe_truth(folder: Path, items: list[Item], metas: dict[str, dict[str, Any]]) -> None:
    queries = [it for it in items if it.split == "queries"]
    docs = [it for it in items if it.split == "docs"]
    truth, occ = [], []
    for q in queries:
        term = q.labels["wrd"]
        for d in docs:
            hit = term in d.labels["wrd"].split()
            truth.append(f"{q.uid} {d.uid} {int(hit)}\n")
            if hit:
                for text, start, end in metas[d.uid]["words"]:
                    if term in text.split():
                        occ.append(f"{q.uid} {d.uid} {start / SAMPLE_RATE:.3f} {end / SAMPLE_RATE:.3f}\n")
    atomic_write_text(folder / "ground_truth.txt", "".join(truth))
    atomic_write_text(folder / "occurrences.txt", "".join(occ))
