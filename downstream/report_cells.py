"""The numbers behind the downstream report: cells (runs of one task x upstream), their
statistics and intervals, reference levels (chance, fbank, best), the corpus of the results, and
the hub's digest of an upstream. Used by :mod:`.report` (markdown, JSON) and :mod:`.report_plots`.

Values stay in the metric's own units (fractions for percentages); a non-finite score is kept
as NaN here and turned into ``null`` + ``nan_from`` by the report's JSON writer.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

__all__ = ["TASK_ORDER", "PERCENT", "METRIC_NAMES", "BASELINE", "wilson_interval", "chance_level", "table",
           "cell_stats", "best_of", "task_chance", "corpora", "corpus_text", "corpus_title", "runs_sentence",
           "hub_sha256", "tasks_of", "upstreams_of", "unit", "num", "finite"]

#: Column order of the table (SUPERB's grouping: content, speaker, semantics, paralinguistics).
TASK_ORDER = ("pr", "asr", "ks", "qbe", "sid", "asv", "sd", "ic", "sf", "er")

#: Metrics shown as percentages; the others (mtwv, map) as plain numbers.
PERCENT = {"accuracy", "per", "wer", "cer", "eer", "der", "slot_f1", "slot_cer", "miss", "false_alarm", "confusion"}
METRIC_NAMES = {"accuracy": "accuracy", "per": "PER", "wer": "WER", "cer": "CER", "eer": "EER", "der": "DER",
                "slot_f1": "slot F1", "slot_cer": "slot CER", "mtwv": "MTWV", "map": "MAP"}

#: the upstream the reference line "fbank" is drawn for
BASELINE = "fbank"


def num(v: Any) -> float:
    """A score as a float; ``None`` (a NaN that an earlier report wrote as null) is NaN."""
    return math.nan if v is None else float(v)


def finite(values: Iterable[float]) -> bool:
    return all(math.isfinite(v) for v in values)

def unit(metric: str) -> str:
    return " (%)" if metric in PERCENT else ""


def tasks_of(results: list[dict[str, Any]]) -> list[str]:
    names = {r["task"] for r in results}
    return [t for t in TASK_ORDER if t in names] + sorted(names - set(TASK_ORDER))


def upstreams_of(results: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for r in results:
        if r["upstream"]["name"] not in seen:
            seen.append(r["upstream"]["name"])
    return seen

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


def table(results: list[dict[str, Any]]) -> dict[str, Any]:
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    swept: set[tuple[str, str]] = set()
    secondary: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    meta: dict[str, dict[str, Any]] = {}
    sizes: dict[str, set[tuple[int, str]]] = defaultdict(set)
    nan_from: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in results:
        key = (r["task"], r["upstream"]["name"])
        value = num(r["value"])
        cells[key].append(value)
        runs[key].append(r)
        if not math.isfinite(value):
            nan_from[key].append(str(Path(r["_path"]) / r.get("_file", "result.json")))
        if r.get("lr_sweep"):
            swept.add(key)
        for m, v in r.get("metrics", {}).items():
            if m != r["metric"] and (isinstance(v, (int, float)) or v is None):
                secondary[key][m].append(num(v))
        meta[r["task"]] = {"metric": r["metric"], "higher_is_better": r["higher_is_better"],
                           "description": r.get("description", "")}
        scored = r.get("scored")
        if scored:
            sizes[r["task"]].add((int(scored["count"]), str(scored["unit"])))
    return {"cells": cells, "runs": runs, "secondary": secondary, "meta": meta, "sizes": sizes, "swept": swept,
            "nan_from": nan_from}


def best_of(t: dict[str, Any], task: str) -> tuple[float, set[str]] | None:
    """The best finite mean of ``task`` and every upstream tied for it (None without a finite cell)."""
    m = t["meta"][task]
    scored = {u: sum(v) / len(v) for (tk, u), v in t["cells"].items() if tk == task and finite(v)}
    if not scored:
        return None
    top = (max if m["higher_is_better"] else min)(scored.values())
    return top, {u for u, v in scored.items() if math.isclose(v, top, rel_tol=1e-9, abs_tol=1e-12)}


def cell_stats(t: dict[str, Any], task: str, up: str) -> dict[str, Any] | None:
    """One cell's statistics in the metric's units: mean, std, interval and where it came from."""
    values = t["cells"].get((task, up))
    if not values:
        return None
    metric = t["meta"][task]["metric"]
    out: dict[str, Any] = {"values": values, "n_runs": len(values), "mean": None, "std": None,
                           "interval": None, "nan_from": t["nan_from"].get((task, up), [])}
    if not finite(values):
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


def task_chance(t: dict[str, Any], task: str) -> tuple[float, str] | None:
    files = [Path(r["_path"]) / f"predictions_{r.get('split') or 'test'}.tsv"
             for (tk, _), rs in sorted(t["runs"].items()) if tk == task for r in rs]
    return chance_level(t["meta"][task]["metric"], files)


def corpora(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def corpus_text(c: dict[str, Any]) -> str:
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


def corpus_title(c: dict[str, Any]) -> str:
    """Short form for the figure: ``speechssl-espeak tiny (seed 0): …/hubert/corpus``."""
    if not c["path"]:
        return "corpus unknown"
    parts = Path(c["path"]).parts
    short = c["path"] if len(c["path"]) <= 40 else "…/" + "/".join(parts[-2:])
    if not c["card"]:
        return f"corpus {short} (preset unknown)"
    seed = f", seed {c['seed']}" if c.get("seed") is not None else ""
    return f"{c.get('name') or 'corpus'} preset {c.get('preset')}{seed}: {short}"


def runs_sentence(t: dict[str, Any]) -> str:
    counts = sorted({len(v) for v in t["cells"].values()})
    if counts == [1]:
        return "Each cell is a single run (one seed), so no spread across runs is known."
    if len(counts) == 1:
        return f"Each cell is the mean ± std over {counts[0]} runs (seeds)."
    return ("Cells with several runs show mean ± std (runs); the others are single runs "
            f"({sum(len(v) == 1 for v in t['cells'].values())} of {len(t['cells'])} cells).")


_HUB_SHA: dict[str, str | None] = {}


def hub_sha256(r: dict[str, Any]) -> str | None:
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
