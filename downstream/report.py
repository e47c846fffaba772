"""Collect ``result.json`` files into a readable report: a markdown table and PNG plots.

``speechssl downstream report EXP_DIRS... --out DIR`` writes::

    DIR/report.md              upstream × task table (metric and direction in the header),
                               a one-line legend per task, secondary metrics, run details
    DIR/report.json            the same numbers, machine-readable
    DIR/metrics.png            each task's metric per upstream (one panel per task; see below)
    DIR/layer_weights.png      learned featurizer weights per layer, per task (weighted-sum runs)

Several runs of one (task, upstream) pair (e.g. seeds) are averaged and shown as
``mean ± std (n)``; the header says whether cells are single runs or means over runs, and
names the corpus (and its preset, from its ``corpus.json``) the results were scored on.

``metrics.png``: one bar per upstream with its value written on it; error bars are the 95 %
Wilson interval of a test accuracy (from the number of scored items), else ± std over runs
when a cell has several (each run is also drawn as a dot); per task, reference lines for
chance (:func:`chance_level`), ``fbank`` and the best upstream. Panels of one metric kind
share one y-axis starting at 0 (0–100 for percentages), so bar heights compare across tasks.

A non-finite score (NaN) is never written as bare ``NaN``: ``report.json`` holds ``null`` and
``nan_from`` names the result files it came from; the table shows ``NaN`` and lists them.

The runs table's ``fingerprint`` is the upstream's :func:`speechssl.fingerprint.model_sha256`
(method, config and every tensor; it keys the feature cache), which ``result.json`` records;
``speechssl hub info`` prints another digest, the sha256 of ``model.safetensors``'s bytes, which
the table gives beside it for upstreams loaded from a model directory that still exists.

A cell whose learning rate was chosen by a sweep (``--lr-sweep``) is marked † (the lr was chosen on the validation split; the test score is that lr's). The runs
table gives each run's lr and its updates as ``best of trained`` (the update of the evaluated
checkpoint, of the updates trained, and whether early stopping ended the training).
"""
from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from speechssl.atomic import atomic_open, atomic_write_text

__all__ = ["collect_results", "render_markdown", "write_report", "chance_level", "wilson_interval", "summarize",
           "TASK_ORDER"]

_log = logging.getLogger(__name__)

#: Column order of the table (SUPERB's grouping: content, speaker, semantics, paralinguistics).
TASK_ORDER = ("pr", "asr", "ks", "qbe", "sid", "asv", "sd", "ic", "sf", "er")

# Metrics shown as percentages; the others (mtwv, map) as plain numbers.
_PERCENT = {"accuracy", "per", "wer", "cer", "eer", "der", "slot_f1", "slot_cer", "miss", "false_alarm", "confusion"}
_METRIC_NAMES = {"accuracy": "accuracy", "per": "PER", "wer": "WER", "cer": "CER", "eer": "EER", "der": "DER",
                 "slot_f1": "slot F1", "slot_cer": "slot CER", "mtwv": "MTWV", "map": "MAP"}
_METRIC_HELP = {
    "accuracy": "fraction of utterances classified correctly",
    "per": "phone error rate: (substitutions + deletions + insertions) / reference phones",
    "wer": "word error rate: word edits / reference words",
    "eer": "equal error rate: where false accepts = false rejects on the trial list",
    "der": "diarization error rate: (missed speech + false alarm + speaker confusion) / speech",
    "slot_f1": "slot-type F1 between predicted and reference slot types, averaged over utterances",
    "mtwv": "maximum term-weighted value: 1 - (miss rate + β · false-alarm rate) at the best threshold",
}


def _find(paths: Iterable[str | Path]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "result.json").is_file():
            found.append(p / "result.json")
        elif p.is_file() and p.name.endswith(".json"):
            found.append(p)
        elif p.is_dir():
            found += sorted(p.glob("*/result.json"))
        else:
            raise FileNotFoundError(f"{p}: no such experiment directory or result file")
    if not found:
        raise FileNotFoundError(f"no result.json under {', '.join(map(str, paths))}; train or evaluate first")
    return found


def collect_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every ``result.json`` in ``paths`` (experiment dirs, their parents, or the files)."""
    out = []
    for f in _find(paths):
        try:
            r = json.loads(f.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{f}: not valid JSON ({exc})") from None
        for key in ("task", "metric", "value", "higher_is_better", "upstream"):
            if key not in r:
                raise ValueError(f"{f}: not a downstream result (no {key!r})")
        r["_path"], r["_file"] = str(f.parent), f.name
        out.append(r)
    _check_cells(out)
    return out


def _check_cells(results: list[dict[str, Any]]) -> None:
    """Runs of one (task, upstream name) are averaged as seeds: they must be the same upstream
    (weights hash) read the same way (featurizer), or the cell would mix different models."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        key = (r["task"], r["upstream"]["name"])
        ref = first.setdefault(key, r)
        for what, get in (("weights (hash)", lambda x: x["upstream"].get("hash")),
                          ("featurizer", lambda x: x.get("featurizer"))):
            if get(r) != get(ref):
                raise ValueError(f"{ref['_path']} and {r['_path']} both report upstream {key[1]!r} on {key[0]} but "
                                 f"with different {what}: {get(ref)} vs {get(r)}; give the runs different "
                                 "upstream names (-u NAME) so the report does not average them as seeds")


def _num(v: Any) -> float:
    """A score as a float; ``None`` (a NaN that an earlier report wrote as null) is NaN."""
    return math.nan if v is None else float(v)


def _finite(values: Iterable[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def _fmt(metric: str, values: list[float]) -> str:
    if not _finite(values):
        return "NaN"
    scale = 100.0 if metric in _PERCENT else 1.0
    digits = 2 if metric in _PERCENT else 4
    mean = sum(values) / len(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    std = math.sqrt(sum((v * scale - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({len(values)})"


def _unit(metric: str) -> str:
    return " (%)" if metric in _PERCENT else ""


def _tasks_of(results: list[dict[str, Any]]) -> list[str]:
    names = {r["task"] for r in results}
    return [t for t in TASK_ORDER if t in names] + sorted(names - set(TASK_ORDER))


def _upstreams_of(results: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for r in results:
        if r["upstream"]["name"] not in seen:
            seen.append(r["upstream"]["name"])
    return seen


SWEPT_MARK = "†"
#: the upstream the reference line "fbank" is drawn for
BASELINE = "fbank"


def _updates(r: dict[str, Any]) -> str:
    """``300 of 800``, ``200 of 500, stopped early``; older results: the evaluated checkpoint's updates."""
    t = r.get("training") or {}
    best, trained = t.get("best_update"), t.get("trained_updates")
    if best is None or trained is None:
        return str(r.get("num_updates") or "–")
    return f"{best} of {trained}" + (", stopped early" if t.get("stopped_early") else "")


def _lr(r: dict[str, Any]) -> str:
    sweep = r.get("lr_sweep")
    if sweep:
        return f"{sweep['chosen_lr']:g} {SWEPT_MARK} (of {', '.join(f'{x:g}' for x in sweep['lrs'])})"
    lr = (((r.get("config") or {}).get("trainer") or {}).get("optim") or {}).get("lr")
    return "–" if lr is None else f"{lr:g}"


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % (``z = 1.96``) Wilson score interval of a proportion ``p`` measured on ``n`` items.

    Unlike ``p ± z·√(p(1-p)/n)`` it stays inside [0, 1] and is not empty at p = 0 or 1.
    """
    if n <= 0:
        raise ValueError(f"wilson_interval needs n > 0 items, got {n}")
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def chance_level(metric: str, prediction_files: Iterable[Path] = ()) -> tuple[float, str] | None:
    """What a trivial system scores, in the metric's own units (fractions for percentages).

    - ``accuracy``: the majority-class rate of the test targets (always answering the most
      frequent class), read from a run's ``predictions_<split>.tsv`` (``id, prediction, target``);
    - ``per``/``wer``/``cer``/``slot_cer``/``der``: 1.0, an empty output (every reference unit deleted,
      all speech missed);
    - ``eer``: 0.5, random scores; ``mtwv``: 0.0, detecting nothing; ``slot_f1``: 0.0.

    Returns:
        ``(value, what it is)``, or None when the metric has no such level (or, for accuracy,
        no predictions file can be read).
    """
    fixed = {"per": (1.0, "empty output"), "wer": (1.0, "empty output"), "cer": (1.0, "empty output"),
             "slot_cer": (1.0, "empty output"), "der": (1.0, "no speech detected"),
             "eer": (0.5, "random scores"), "mtwv": (0.0, "detecting nothing"), "slot_f1": (0.0, "no slots")}
    if metric in fixed:
        return fixed[metric]
    if metric != "accuracy":
        return None
    for path in prediction_files:
        try:
            lines = [ln.split("\t") for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
        except OSError:
            continue
        targets = [parts[2] for parts in lines if len(parts) == 3]
        if targets and len(targets) == len(lines):
            counts = {t: targets.count(t) for t in set(targets)}
            top = max(counts, key=lambda t: (counts[t], t))
            if len(set(counts.values())) == 1:
                return counts[top] / len(targets), f"{len(counts)} equally frequent classes"
            return counts[top] / len(targets), f"majority class {top!r}"
    return None


def _table(results: list[dict[str, Any]]) -> dict[str, Any]:
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    swept: set[tuple[str, str]] = set()
    secondary: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    meta: dict[str, dict[str, Any]] = {}
    sizes: dict[str, set[tuple[int, str]]] = defaultdict(set)
    nan_from: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in results:
        key = (r["task"], r["upstream"]["name"])
        value = _num(r["value"])
        cells[key].append(value)
        runs[key].append(r)
        if not math.isfinite(value):
            nan_from[key].append(str(Path(r["_path"]) / r.get("_file", "result.json")))
        if r.get("lr_sweep"):
            swept.add(key)
        for m, v in r.get("metrics", {}).items():
            if m != r["metric"] and (isinstance(v, (int, float)) or v is None):
                secondary[key][m].append(_num(v))
        meta[r["task"]] = {"metric": r["metric"], "higher_is_better": r["higher_is_better"],
                           "description": r.get("description", "")}
        scored = r.get("scored")
        if scored:
            sizes[r["task"]].add((int(scored["count"]), str(scored["unit"])))
    return {"cells": cells, "runs": runs, "secondary": secondary, "meta": meta, "sizes": sizes, "swept": swept,
            "nan_from": nan_from}


def _best(t: dict[str, Any], task: str) -> tuple[float, set[str]] | None:
    """The best finite mean of ``task`` and every upstream tied for it (None without a finite cell)."""
    m = t["meta"][task]
    scored = {u: sum(v) / len(v) for (tk, u), v in t["cells"].items() if tk == task and _finite(v)}
    if not scored:
        return None
    top = (max if m["higher_is_better"] else min)(scored.values())
    return top, {u for u, v in scored.items() if math.isclose(v, top, rel_tol=1e-9, abs_tol=1e-12)}


def _cell(t: dict[str, Any], task: str, up: str) -> dict[str, Any] | None:
    """One cell's statistics in the metric's units: mean, std, interval and where it came from."""
    values = t["cells"].get((task, up))
    if not values:
        return None
    metric = t["meta"][task]["metric"]
    out: dict[str, Any] = {"values": values, "n_runs": len(values), "mean": None, "std": None,
                           "interval": None, "nan_from": t["nan_from"].get((task, up), [])}
    if not _finite(values):
        return out
    mean = sum(values) / len(values)
    out["mean"] = mean
    if len(values) > 1:
        out["std"] = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    counts = [int(r["scored"]["count"]) for r in t["runs"][(task, up)] if r.get("scored")]
    if metric == "accuracy" and counts and min(counts) > 0 and 0.0 <= mean <= 1.0:
        lo, hi = wilson_interval(mean, min(counts))
        out["interval"] = {"low": lo, "high": hi, "kind": f"95 % Wilson interval over {min(counts)} test items"}
    elif out["std"] is not None:
        out["interval"] = {"low": mean - out["std"], "high": mean + out["std"],
                           "kind": f"± std over {len(values)} runs"}
    return out


def _chance(t: dict[str, Any], task: str) -> tuple[float, str] | None:
    files = [Path(r["_path"]) / f"predictions_{r.get('split') or 'test'}.tsv"
             for (tk, _), rs in sorted(t["runs"].items()) if tk == task for r in rs]
    return chance_level(t["meta"][task]["metric"], files)


def _corpora(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The corpora the results were scored on (``config.run.data``), with their card when present."""
    by_path: dict[str, dict[str, Any]] = {}
    for r in results:
        data = str((((r.get("config") or {}).get("run") or {}).get("data")) or "")
        entry = by_path.setdefault(data, {"path": data or None, "tasks": []})
        if r["task"] not in entry["tasks"]:
            entry["tasks"].append(r["task"])
    for data, entry in by_path.items():
        card_path = Path(data) / "corpus.json" if data else None
        card: dict[str, Any] = {}
        if card_path is not None and card_path.is_file():
            try:
                card = json.loads(card_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                card = {}
        entry.update({k: card.get(k) for k in ("name", "preset", "seed", "hours")})
        entry["card"] = bool(card)
    return list(by_path.values())


def _corpus_text(c: dict[str, Any]) -> str:
    if not c["path"]:
        return "unknown (the results do not record config.run.data)"
    if not c["card"]:
        return f"`{c['path']}` (no corpus.json there: not the embedded corpus, or moved; preset unknown)"
    bits = [str(c.get("name") or "corpus"), f"preset `{c.get('preset')}`"]
    if c.get("seed") is not None:
        bits.append(f"seed {c['seed']}")
    if c.get("hours") is not None:
        bits.append(f"{c['hours']:.2f} h")
    return f"`{c['path']}` ({', '.join(bits)})"


def _corpus_title(c: dict[str, Any]) -> str:
    """Short form for the figure: ``speechssl-espeak tiny (seed 0): …/hubert/corpus``."""
    if not c["path"]:
        return "corpus unknown"
    parts = Path(c["path"]).parts
    short = c["path"] if len(c["path"]) <= 40 else "…/" + "/".join(parts[-2:])
    if not c["card"]:
        return f"corpus {short} (preset unknown)"
    seed = f", seed {c['seed']}" if c.get("seed") is not None else ""
    return f"{c.get('name') or 'corpus'} preset {c.get('preset')}{seed}: {short}"


def _runs_sentence(t: dict[str, Any]) -> str:
    counts = sorted({len(v) for v in t["cells"].values()})
    if counts == [1]:
        return "Each cell is a single run (one seed), so no spread across runs is known."
    if len(counts) == 1:
        return f"Each cell is the mean ± std over {counts[0]} runs (seeds)."
    return ("Cells with several runs show mean ± std (runs); the others are single runs "
            f"({sum(len(v) == 1 for v in t['cells'].values())} of {len(t['cells'])} cells).")


_HUB_SHA: dict[str, str | None] = {}


def _hub_sha256(r: dict[str, Any]) -> str | None:
    """The ``model.safetensors`` sha256 that ``speechssl hub info`` prints for the run's upstream,
    when it was loaded from a model directory (``-k`` or ``-u``) that still exists."""
    up = r["upstream"]
    src = up.get("ckpt") or up.get("name")
    if not src or up.get("method") in ("fbank", "mfcc", "spectrogram", "pixels") or str(src).startswith("random:"):
        return None
    if src not in _HUB_SHA:
        sha = None
        try:
            from speechssl import hub

            path = hub.resolve(src)
            if path.is_dir() and (path / "config.json").is_file():
                sha = json.loads((path / "config.json").read_text(encoding="utf-8")).get("sha256")
        except (OSError, ValueError, KeyError):
            sha = None
        _HUB_SHA[src] = sha if isinstance(sha, str) else None
    return _HUB_SHA[src]


def _test_size(metric: str, sizes: set[tuple[int, str]]) -> str:
    """What a task's test scores rest on, e.g. ``Test set: 13 utterances (...)``; "" if unknown.

    For accuracies, how far one item and sampling noise move the score: each item is 100/n
    points, and a 95 % binomial interval around 50 % spans ±1.96·√(0.25/n).
    """
    if not sizes:
        return ""
    counts = sorted({n for n, _ in sizes})
    n = counts[0]
    text = f" Test set: {n if len(counts) == 1 else f'{n} to {counts[-1]}'} {'/'.join(sorted({u for _, u in sizes}))}"
    if metric == "accuracy" and n > 0:
        text += (f" (one is {100.0 / n:.2f} points; a 95 % interval around 50 % spans "
                 f"±{196.0 * math.sqrt(0.25 / n):.1f} points)")
    return text + "."


def _fmt_ref(metric: str, value: float) -> str:
    return f"{value * 100:.2f} %" if metric in _PERCENT else f"{value:.4f}"


def render_markdown(results: list[dict[str, Any]], plots: list[str] | None = None) -> str:
    """The report as markdown (see the module docstring)."""
    t = _table(results)
    tasks, ups = _tasks_of(results), _upstreams_of(results)
    header = ["upstream"]
    for task in tasks:
        m = t["meta"][task]
        arrow = "↑" if m["higher_is_better"] else "↓"
        header.append(f"{task} {_METRIC_NAMES.get(m['metric'], m['metric'])}{_unit(m['metric'])} {arrow}")
    best: dict[str, set[str]] = {}  # every upstream tied for the best value is bold
    for task in tasks:
        b = _best(t, task)
        if b is not None and len({u for (tk, u) in t["cells"] if tk == task}) > 1:
            best[task] = b[1]
    corpora = _corpora(results)
    if len(corpora) == 1:
        where = f"Corpus: {_corpus_text(corpora[0])}."
    else:
        where = "Corpora: " + "; ".join(f"{', '.join(c['tasks'])} on {_corpus_text(c)}" for c in corpora) + "."
    lines = ["# Downstream evaluation", "", where, "",
             "Each column is a task scored by its metric; ↑ means higher is better, ↓ lower is better. "
             "The best upstream per task is in bold (all of them on a tie). " + _runs_sentence(t), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for u in ups:
        row = [f"`{u}`"]
        for task in tasks:
            vals = t["cells"].get((task, u))
            if not vals:
                row.append("–")
                continue
            text = _fmt(t["meta"][task]["metric"], vals)
            text = f"**{text}**" if u in best.get(task, ()) else text
            row.append(f"{text} {SWEPT_MARK}" if (task, u) in t["swept"] else text)
        lines.append("| " + " | ".join(row) + " |")
    if t["nan_from"]:
        files = sorted(f for fs in t["nan_from"].values() for f in fs)
        lines += ["", f"NaN: {len(files)} run(s) scored NaN (a diverged head or an empty test set); the cell shows "
                  "NaN and report.json holds null with nan_from naming the file: " + ", ".join(files) + "."]
    if t["swept"]:
        lines += ["", f"{SWEPT_MARK} best of a learning-rate sweep: one head per lr, the lr chosen by the "
                  "validation split's metric, the test score that lr's (every lr's scores are in its "
                  "result.json under lr_sweep). Cells without the mark used one lr."]
    lines += ["", "## What the tasks are", ""]
    for task in tasks:
        m = t["meta"][task]
        desc = m["description"] or task
        help_ = _METRIC_HELP.get(m["metric"], m["metric"])
        lines.append(f"- **{task}** — {desc}. Metric: {_METRIC_NAMES.get(m['metric'], m['metric'])} "
                     f"({'higher' if m['higher_is_better'] else 'lower'} is better): {help_}."
                     + _test_size(m["metric"], t["sizes"].get(task, set())))
    lines += ["", "## Reference levels", "",
              "The lines of metrics.png: chance is what a trivial system scores (accuracy: always the test "
              "set's most frequent class; error rates: an empty output; EER: random scores; MTWV: detecting "
              "nothing), fbank the fbank baseline, best the best upstream.", "",
              "| task | chance | fbank | best |", "|---|---|---|---|"]
    for task in tasks:
        metric = t["meta"][task]["metric"]
        chance, base, b = _chance(t, task), _cell(t, task, BASELINE), _best(t, task)
        lines.append(f"| {task} | "
                     + (f"{_fmt_ref(metric, chance[0])} ({chance[1]})" if chance else "–") + " | "
                     + (_fmt_ref(metric, base["mean"]) if base and base["mean"] is not None else "–") + " | "
                     + (f"{_fmt_ref(metric, b[0])} ({', '.join(f'`{u}`' for u in sorted(b[1]))})" if b else "–")
                     + " |")
    sec_lines = []
    for task in tasks:
        for u in ups:
            sec = t["secondary"].get((task, u))
            if sec:
                parts = [f"{_METRIC_NAMES.get(k, k)}{_unit(k)} {_fmt(k, v)}" for k, v in sorted(sec.items())]
                sec_lines.append(f"| {task} | `{u}` | " + ", ".join(parts) + " |")
    if sec_lines:
        lines += ["", "## Other metrics", "", "| task | upstream | metrics |", "|---|---|---|", *sec_lines]
    lines += ["", "## Runs", "", "Updates: the update of the evaluated (best validation) checkpoint, of the "
              "updates trained. Fingerprint: sha256 over the upstream's method, config and every tensor "
              "(what result.json records and the feature cache is keyed by); `speechssl hub info` prints a "
              "different digest of a model directory, the sha256 of its model.safetensors file, given in the "
              "next column where the upstream came from a model directory that still exists.", "",
              "| task | upstream | fingerprint | hub info sha256 | featurizer | seed | lr | updates | experiment |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (tasks.index(r["task"]), ups.index(r["upstream"]["name"]))):
        feat = r.get("featurizer") or {}
        mode = "weighted sum" if feat.get("layer") is None else f"layer {feat.get('layer')}"
        if feat.get("normalize"):
            mode += ", normalised"
        hub_sha = _hub_sha256(r)
        lines.append(f"| {r['task']} | `{r['upstream']['name']}` | {str(r['upstream'].get('hash', ''))[:12]} | "
                     f"{hub_sha[:12] if hub_sha else '–'} | "
                     f"{mode} | {r.get('seed', '')} | {_lr(r)} | {_updates(r)} | {r['_path']} |")
    if plots:
        lines += ["", "## Plots", ""]
        if "metrics.png" in plots:
            lines += ["metrics.png: one bar per upstream with its value on it. Error bars: the 95 % Wilson "
                      "interval of a test accuracy (from the scored items), else ± std over runs for cells with "
                      "several (each run a dot); none for a single run of another metric. Lines: chance "
                      "(dashed grey), fbank (dotted black), best (dash-dot red). Panels of one metric kind "
                      "share one y-axis from 0.", ""]
        lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


# reference lines of metrics.png: gid -> (label, line style, colour)
REFERENCE_LINES = {"chance": ("chance", "--", "0.45"), "fbank": ("fbank", ":", "black"),
                   "best": ("best", "-.", "tab:red")}


def _plot_metrics(results: list[dict[str, Any]], path: Path) -> Any:
    """Draw ``metrics.png``; returns the (closed) matplotlib Figure for inspection."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    t = _table(results)
    tasks, ups = _tasks_of(results), _upstreams_of(results)
    cols = min(len(tasks), 5)
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows + 0.9), squeeze=False)
    panels = []
    for ax, task in zip(axes.flat, tasks):
        m = t["meta"][task]
        scale = 100.0 if m["metric"] in _PERCENT else 1.0
        cells = [_cell(t, task, u) for u in ups]
        heights = [c["mean"] * scale if c and c["mean"] is not None else 0.0 for c in cells]
        ax.bar(range(len(ups)), heights, color=[f"C{i}" for i in range(len(ups))],
               alpha=0.85, zorder=2)
        tops = list(heights)
        with_bars = [i for i, c in enumerate(cells) if c and c["interval"]]
        if with_bars:
            lo = [heights[i] - cells[i]["interval"]["low"] * scale for i in with_bars]
            hi = [cells[i]["interval"]["high"] * scale - heights[i] for i in with_bars]
            ax.errorbar(with_bars, [heights[i] for i in with_bars], yerr=[lo, hi], fmt="none", ecolor="black",
                        elinewidth=1, capsize=3, zorder=4)
            for i in with_bars:
                tops[i] = max(tops[i], cells[i]["interval"]["high"] * scale)
        for i, c in enumerate(cells):
            if c and c["n_runs"] > 1 and c["mean"] is not None:
                ax.plot([i] * c["n_runs"], [v * scale for v in c["values"]], "o", ms=3, color="black",
                        zorder=5, gid="runs")
                tops[i] = max([tops[i]] + [v * scale for v in c["values"]])
        refs: dict[str, float] = {}
        chance = _chance(t, task)
        if chance is not None:
            refs["chance"] = chance[0] * scale
        base = _cell(t, task, BASELINE)
        if base and base["mean"] is not None:
            refs["fbank"] = base["mean"] * scale
        b = _best(t, task)
        if b is not None:
            refs["best"] = b[0] * scale
        for gid, y in refs.items():
            label, style, colour = REFERENCE_LINES[gid]
            ax.axhline(y, ls=style, color=colour, lw=1.1, zorder=3, gid=gid, label=label)
        panels.append((ax, task, cells, heights, tops, refs, scale))
        ax.set_xticks(range(len(ups)))
        ax.set_xticklabels(ups, rotation=30, ha="right", fontsize=7)
        arrow = "↑" if m["higher_is_better"] else "↓"
        ax.set_title(f"{task}: {_METRIC_NAMES.get(m['metric'], m['metric'])}{_unit(m['metric'])} {arrow}", fontsize=9)
        ax.grid(axis="y", color="0.9", zorder=0)
    # one y range per metric kind (percentages / other scores), from 0, shared by its panels
    kinds: dict[bool, list[Any]] = defaultdict(list)
    for panel in panels:
        kinds[panel[6] == 100.0].append(panel)
    for percent, group in kinds.items():
        values = [v for p in group for v in p[4] + list(p[5].values())]
        top = max([100.0 if percent else 1.0] + values)
        bottom = min([0.0] + values)
        for ax, *_ in group:
            ax.set_ylim(bottom, top * 1.14)
    for ax, task, cells, heights, tops, refs, scale in panels:
        metric = t["meta"][task]["metric"]
        span = ax.get_ylim()[1] - ax.get_ylim()[0]
        for i, c in enumerate(cells):
            if c is None:
                continue
            if c["mean"] is None:
                ax.text(i, ax.get_ylim()[0] + 0.02 * span, "NaN", ha="center", va="bottom", fontsize=7,
                        color="tab:red", gid="value")
                continue
            text = f"{heights[i]:.1f}" if metric in _PERCENT else f"{heights[i]:.3f}"
            ax.text(i, tops[i] + 0.015 * span, text, ha="center", va="bottom", fontsize=7, gid="value", zorder=6,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.85})
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    corpora = _corpora(results)
    where = "; ".join(_corpus_title(c) for c in corpora)
    counts = sorted({len(v) for v in t["cells"].values()})
    runs = ("single runs" if counts == [1] else f"mean of {counts[0]} runs" if len(counts) == 1
            else "mean over runs where a cell has several, else single runs")
    fig.suptitle(f"{where} · {runs} · error bars: 95 % interval (accuracy) or ± std (runs)", fontsize=9)
    handles = [Line2D([], [], ls=style, color=colour, label=label) for label, style, colour in REFERENCE_LINES.values()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    _save(fig, path, rect=(0, 0.06, 1, 0.95))
    return fig


def _plot_layer_weights(results: list[dict[str, Any]], path: Path) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_up: dict[str, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        w = r.get("layer_weights")
        if w and len(w) > 1 and (r.get("featurizer") or {}).get("layer") is None:
            by_up[r["upstream"]["name"]][r["task"]].append(w)
    if not by_up:
        return False
    fig, axes = plt.subplots(1, len(by_up), figsize=(4.5 * len(by_up), 3.2), squeeze=False)
    for ax, (up, tasks) in zip(axes.flat, by_up.items()):
        for i, (task, ws) in enumerate(sorted(tasks.items(), key=lambda kv: TASK_ORDER.index(kv[0])
                                              if kv[0] in TASK_ORDER else 99)):
            mean = [sum(col) / len(col) for col in zip(*ws)]
            ax.plot(range(len(mean)), mean, marker="o", label=task, color=f"C{i}")
        ax.set_title(f"learned layer weights: {up}", fontsize=9)
        ax.set_xlabel("hidden state (0 = input of the first layer)")
        ax.set_ylabel("softmax weight")
        ax.legend(fontsize=7)
    _save(fig, path)
    return True


def _save(fig: Any, path: Path, rect: tuple[float, float, float, float] | None = None) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=rect)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def _json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``report.json``'s rows: one per (task, upstream) cell, JSON-safe (no NaN: null + ``nan_from``)."""
    t = _table(results)
    corpora = {task: c for c in _corpora(results) for task in c["tasks"]}
    out = []
    for (task, u), v in sorted(t["cells"].items()):
        cell = _cell(t, task, u)
        chance = _chance(t, task)
        c = corpora.get(task) or {}
        first = t["runs"][(task, u)][0]
        out.append(_json_safe({
            "task": task, "upstream": u, "metric": t["meta"][task]["metric"],
            "higher_is_better": t["meta"][task]["higher_is_better"], "values": v,
            "mean": cell["mean"], "std": cell["std"], "n_runs": cell["n_runs"], "interval": cell["interval"],
            "nan_from": cell["nan_from"], "chance": None if chance is None else {"value": chance[0], "what": chance[1]},
            "lr_swept": (task, u) in t["swept"],
            "corpus": {"path": c.get("path"), "preset": c.get("preset"), "seed": c.get("seed")},
            "upstream_fingerprint": first["upstream"].get("hash"), "hub_sha256": _hub_sha256(first)}))
    return out


def write_report(paths: Iterable[str | Path], out: str | Path) -> Path:
    """Write ``report.md``, ``report.json`` and the plots into ``out``; return the markdown path."""
    results = collect_results(list(paths))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    _plot_metrics(results, out / "metrics.png")
    plots.append("metrics.png")
    if _plot_layer_weights(results, out / "layer_weights.png"):
        plots.append("layer_weights.png")
    md = render_markdown(results, plots)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.json", json.dumps(summarize(results), indent=1, allow_nan=False) + "\n")
    _log.info("report of %d results: %s", len(results), out / "report.md")
    return out / "report.md"
