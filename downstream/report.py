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
share one y-axis starting at 0 (accuracy-like percentages 0–100; error rates 0–100, or more
when one exceeds 100; other scores 0–1), so bar heights compare across tasks.

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
from pathlib import Path
from typing import Any, Iterable

from speechssl.atomic import atomic_write_text
from speechssl.downstream import report_cells as rc
from speechssl.downstream.report_cells import (  # noqa: F401 - re-exported
    BASELINE, METRIC_NAMES, PERCENT, TASK_ORDER, chance_level, wilson_interval)
from speechssl.downstream.report_plots import plot_layer_weights, plot_metrics

__all__ = ["collect_results", "render_markdown", "write_report", "chance_level", "wilson_interval", "summarize",
           "TASK_ORDER"]

_log = logging.getLogger(__name__)

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
    _name_task_variants(out)
    _check_cells(out)
    return out


def _name_task_variants(results: list[dict[str, Any]]) -> None:
    """Runs of one task with different task options (image_probe's ``factor``, image_seg's
    ``subset``...) are different experiments, not seeds: name each column by the options that
    differ, e.g. ``image_probe (factor=shape)``."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_task.setdefault(r["task"], []).append(r)
    for task, runs in by_task.items():
        options = [((r.get("config") or {}).get("task") or {}) for r in runs]
        keys = sorted({k for o in options for k in o if k != "seed"})
        differing = [k for k in keys if len({json.dumps(o.get(k), sort_keys=True) for o in options}) > 1]
        if differing:
            for r, o in zip(runs, options):
                r["task"] = f"{task} ({', '.join(f'{k}={o.get(k)}' for k in differing)})"


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


def _fmt(metric: str, values: list[float]) -> str:
    if not rc.finite(values):
        return "NaN"
    scale = 100.0 if metric in PERCENT else 1.0
    digits = 2 if metric in PERCENT else 4
    mean = sum(values) / len(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    std = math.sqrt(sum((v * scale - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({len(values)})"


SWEPT_MARK = "†"


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
    return f"{value * 100:.2f} %" if metric in PERCENT else f"{value:.4f}"


def render_markdown(results: list[dict[str, Any]], plots: list[str] | None = None) -> str:
    """The report as markdown (see the module docstring)."""
    t = rc.table(results)
    tasks, ups = rc.tasks_of(results), rc.upstreams_of(results)
    header = ["upstream"]
    for task in tasks:
        m = t["meta"][task]
        arrow = "↑" if m["higher_is_better"] else "↓"
        header.append(f"{task} {METRIC_NAMES.get(m['metric'], m['metric'])}{rc.unit(m['metric'])} {arrow}")
    best: dict[str, set[str]] = {}  # every upstream tied for the best value is bold
    for task in tasks:
        b = rc.best_of(t, task)
        if b is not None and len({u for (tk, u) in t["cells"] if tk == task}) > 1:
            best[task] = b[1]
    corpora = rc.corpora(results)
    if len(corpora) == 1:
        where = f"Corpus: {rc.corpus_text(corpora[0])}."
    else:
        where = "Corpora: " + "; ".join(f"{', '.join(c['tasks'])} on {rc.corpus_text(c)}" for c in corpora) + "."
    lines = ["# Downstream evaluation", "", where, "",
             "Each column is a task scored by its metric; ↑ means higher is better, ↓ lower is better. "
             "The best upstream per task is in bold (all of them on a tie). " + rc.runs_sentence(t), "",
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
        lines.append(f"- **{task}** — {desc}. Metric: {METRIC_NAMES.get(m['metric'], m['metric'])} "
                     f"({'higher' if m['higher_is_better'] else 'lower'} is better): {help_}."
                     + _test_size(m["metric"], t["sizes"].get(task, set())))
    lines += ["", "## Reference levels", "",
              "The lines of metrics.png: chance is what a trivial system scores (accuracy: always the test "
              "set's most frequent class; error rates: an empty output; EER: random scores; MTWV: detecting "
              "nothing), fbank the fbank baseline, best the best upstream.", "",
              "| task | chance | fbank | best |", "|---|---|---|---|"]
    for task in tasks:
        metric = t["meta"][task]["metric"]
        chance, base, b = rc.task_chance(t, task), rc.cell_stats(t, task, BASELINE), rc.best_of(t, task)
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
                parts = [f"{METRIC_NAMES.get(k, k)}{rc.unit(k)} {_fmt(k, v)}" for k, v in sorted(sec.items())]
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
        hub_sha = rc.hub_sha256(r)
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
                      "(accuracy-like %, error rates %, other scores) share one y-axis from 0.", ""]
        lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


# reference lines of metrics.png: gid -> (label, line style, colour)
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
    t = rc.table(results)
    corpora = {task: c for c in rc.corpora(results) for task in c["tasks"]}
    out = []
    for (task, u), v in sorted(t["cells"].items()):
        cell = rc.cell_stats(t, task, u)
        chance = rc.task_chance(t, task)
        c = corpora.get(task) or {}
        first = t["runs"][(task, u)][0]
        out.append(_json_safe({
            "task": task, "upstream": u, "metric": t["meta"][task]["metric"],
            "higher_is_better": t["meta"][task]["higher_is_better"], "values": v,
            "mean": cell["mean"], "std": cell["std"], "n_runs": cell["n_runs"], "interval": cell["interval"],
            "nan_from": cell["nan_from"], "chance": None if chance is None else {"value": chance[0], "what": chance[1]},
            "lr_swept": (task, u) in t["swept"],
            "corpus": {"path": c.get("path"), "preset": c.get("preset"), "seed": c.get("seed")},
            "upstream_fingerprint": first["upstream"].get("hash"), "hub_sha256": rc.hub_sha256(first)}))
    return out


def write_report(paths: Iterable[str | Path], out: str | Path) -> Path:
    """Write ``report.md``, ``report.json`` and the plots into ``out``; return the markdown path."""
    results = collect_results(list(paths))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    plot_metrics(results, out / "metrics.png")
    plots.append("metrics.png")
    if plot_layer_weights(results, out / "layer_weights.png"):
        plots.append("layer_weights.png")
    md = render_markdown(results, plots)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.json", json.dumps(summarize(results), indent=1, allow_nan=False) + "\n")
    _log.info("report of %d results: %s", len(results), out / "report.md")
    return out / "report.md"
