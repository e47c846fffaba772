"""Collect ``result.json`` files into a readable report: a markdown table and PNG plots.

``speechssl downstream report EXP_DIRS... --out DIR`` writes::

    DIR/report.md              upstream × task table (metric and direction in the header),
                               a one-line legend per task, secondary metrics, run details
    DIR/report.json            the same numbers, machine-readable
    DIR/metrics.png            each task's metric per upstream (one panel per task)
    DIR/layer_weights.png      learned featurizer weights per layer, per task (weighted-sum runs)

Several runs of one (task, upstream) pair (e.g. seeds) are averaged and shown as
``mean ± std (n)``. A cell whose learning rate was chosen by a sweep (``--lr-sweep``) is
marked † (the lr was chosen on the validation split; the test score is that lr's). The runs
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

__all__ = ["collect_results", "render_markdown", "write_report", "TASK_ORDER"]

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
        r["_path"] = str(f.parent)
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


def _fmt(metric: str, values: list[float]) -> str:
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


def _table(results: list[dict[str, Any]]) -> dict[str, Any]:
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    swept: set[tuple[str, str]] = set()
    secondary: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    meta: dict[str, dict[str, Any]] = {}
    sizes: dict[str, set[tuple[int, str]]] = defaultdict(set)
    for r in results:
        key = (r["task"], r["upstream"]["name"])
        cells[key].append(float(r["value"]))
        if r.get("lr_sweep"):
            swept.add(key)
        for m, v in r.get("metrics", {}).items():
            if m != r["metric"] and isinstance(v, (int, float)):
                secondary[key][m].append(float(v))
        meta[r["task"]] = {"metric": r["metric"], "higher_is_better": r["higher_is_better"],
                           "description": r.get("description", "")}
        scored = r.get("scored")
        if scored:
            sizes[r["task"]].add((int(scored["count"]), str(scored["unit"])))
    return {"cells": cells, "secondary": secondary, "meta": meta, "sizes": sizes, "swept": swept}


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
        m = t["meta"][task]
        scored = {u: sum(v) / len(v) for (tk, u), v in t["cells"].items() if tk == task}
        if len(scored) > 1:
            top = (max if m["higher_is_better"] else min)(scored.values())
            best[task] = {u for u, v in scored.items() if math.isclose(v, top, rel_tol=1e-9, abs_tol=1e-12)}
    lines = ["# Downstream evaluation", "",
             "Each column is a task scored by its metric; ↑ means higher is better, ↓ lower is better. "
             "The best upstream per task is in bold (all of them on a tie). Several runs of a cell show mean ± std (runs).", "",
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
              "updates trained.", "",
              "| task | upstream | hash | featurizer | seed | lr | updates | experiment |",
              "|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (tasks.index(r["task"]), ups.index(r["upstream"]["name"]))):
        feat = r.get("featurizer") or {}
        mode = "weighted sum" if feat.get("layer") is None else f"layer {feat.get('layer')}"
        if feat.get("normalize"):
            mode += ", normalised"
        lines.append(f"| {r['task']} | `{r['upstream']['name']}` | {str(r['upstream'].get('hash', ''))[:12]} | "
                     f"{mode} | {r.get('seed', '')} | {_lr(r)} | {_updates(r)} | {r['_path']} |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _plot_metrics(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = _table(results)
    tasks, ups = _tasks_of(results), _upstreams_of(results)
    cols = min(len(tasks), 5)
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        m = t["meta"][task]
        scale = 100.0 if m["metric"] in _PERCENT else 1.0
        vals = [sum(t["cells"].get((task, u), [math.nan])) / len(t["cells"].get((task, u), [1])) * scale
                for u in ups]
        ax.bar(range(len(ups)), vals, color=[f"C{i}" for i in range(len(ups))])
        ax.set_xticks(range(len(ups)))
        ax.set_xticklabels(ups, rotation=30, ha="right", fontsize=7)
        arrow = "↑" if m["higher_is_better"] else "↓"
        ax.set_title(f"{task}: {_METRIC_NAMES.get(m['metric'], m['metric'])}{_unit(m['metric'])} {arrow}", fontsize=9)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    _save(fig, path)


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


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


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
    t = _table(results)
    summary = [{"task": task, "upstream": u, "metric": t["meta"][task]["metric"],
                "higher_is_better": t["meta"][task]["higher_is_better"], "values": v,
                "mean": sum(v) / len(v), "lr_swept": (task, u) in t["swept"]}
               for (task, u), v in sorted(t["cells"].items())]
    atomic_write_text(out / "report.json", json.dumps(summary, indent=1) + "\n")
    _log.info("report of %d results: %s", len(results), out / "report.md")
    return out / "report.md"
