"""The report's figures: ``metrics.png`` (bars, error bars, values, chance / fbank / best lines,
one y-axis per metric kind) and ``layer_weights.png``. See :mod:`.report` for what they show."""
from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

from speechssl.atomic import atomic_open
from speechssl.downstream import report_cells as rc
from speechssl.downstream.report_cells import BASELINE, METRIC_NAMES, PERCENT, TASK_ORDER

__all__ = ["plot_metrics", "plot_layer_weights", "REFERENCE_LINES"]

REFERENCE_LINES = {"chance": ("chance", "--", "0.45"), "fbank": ("fbank", ":", "black"),
                   "best": ("best", "-.", "tab:red")}


def plot_metrics(results: list[dict[str, Any]], path: Path) -> Any:
    """Draw ``metrics.png``; returns the (closed) matplotlib Figure for inspection."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    t = rc.table(results)
    tasks, ups = rc.tasks_of(results), rc.upstreams_of(results)
    cols = min(len(tasks), 5)
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows + 0.9), squeeze=False)
    panels = []
    for ax, task in zip(axes.flat, tasks):
        m = t["meta"][task]
        scale = 100.0 if m["metric"] in PERCENT else 1.0
        cells = [rc.cell_stats(t, task, u) for u in ups]
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
        chance = rc.task_chance(t, task)
        if chance is not None:
            refs["chance"] = chance[0] * scale
        base = rc.cell_stats(t, task, BASELINE)
        if base and base["mean"] is not None:
            refs["fbank"] = base["mean"] * scale
        b = rc.best_of(t, task)
        if b is not None:
            refs["best"] = b[0] * scale
        for gid, y in refs.items():
            label, style, colour = REFERENCE_LINES[gid]
            ax.axhline(y, ls=style, color=colour, lw=1.1, zorder=3, gid=gid, label=label)
        panels.append((ax, task, cells, heights, tops, refs, scale))
        ax.set_xticks(range(len(ups)))
        ax.set_xticklabels(ups, rotation=30, ha="right", fontsize=7)
        arrow = "↑" if m["higher_is_better"] else "↓"
        ax.set_title(f"{task}: {METRIC_NAMES.get(m['metric'], m['metric'])}{rc.unit(m['metric'])} {arrow}", fontsize=9)
        ax.grid(axis="y", color="0.9", zorder=0)
    # one y range per metric kind, from 0, shared by its panels: percentages where higher is better
    # (accuracy, F1: 0-100), error rates (0-100, or more when insertions push one past 100), others
    kinds: dict[tuple[bool, bool], list[Any]] = defaultdict(list)
    for panel in panels:
        kinds[(panel[6] == 100.0, bool(t["meta"][panel[1]]["higher_is_better"]))].append(panel)
    for (percent, _), group in kinds.items():
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
            text = f"{heights[i]:.1f}" if metric in PERCENT else f"{heights[i]:.3f}"
            ax.text(i, tops[i] + 0.015 * span, text, ha="center", va="bottom", fontsize=7, gid="value", zorder=6,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.85})
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    corpora = rc.corpora(results)
    where = "; ".join(rc.corpus_title(c) for c in corpora)
    counts = sorted({len(v) for v in t["cells"].values()})
    runs = ("single runs" if counts == [1] else f"mean of {counts[0]} runs" if len(counts) == 1
            else "mean over runs where a cell has several, else single runs")
    rule = f"{runs}; error bars: 95 % interval of a test accuracy, else ± std over runs; dots: runs"
    width = int(16 * fig.get_figwidth())  # characters of 8-point text that fit across the figure
    fig.suptitle("\n".join(textwrap.wrap(where, width) + textwrap.wrap(rule, width)), fontsize=8)
    handles = [Line2D([], [], ls=style, color=colour, label=label) for label, style, colour in REFERENCE_LINES.values()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    title_lines = fig._suptitle.get_text().count("\n") + 1
    _save(fig, path, rect=(0, 0.06, 1, 1 - 0.035 * title_lines * 3.9 / fig.get_figheight()))
    return fig


def plot_layer_weights(results: list[dict[str, Any]], path: Path) -> bool:
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
