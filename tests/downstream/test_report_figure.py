"""The report's honesty (issue 24): error bars, reference lines, values on bars, shared axes,
run-count wording, the corpus named, NaN kept out of the JSON, the hub's hash explained."""
from __future__ import annotations

import json
import math

import pytest
from matplotlib.container import ErrorbarContainer

from speechssl.downstream.report import (
    chance_level, collect_results, render_markdown, summarize, wilson_interval, write_report)
from speechssl.downstream.report_plots import plot_metrics


def _result(task, up, value, *, metric="accuracy", higher=True, seed=1, data=None, count=13, up_hash="ab" * 32):
    return {"task": task, "metric": metric, "value": value, "higher_is_better": higher, "description": task,
            "metrics": {metric: value}, "scored": {"count": count, "unit": "utterances"}, "split": "test",
            "upstream": {"name": up, "hash": up_hash, "method": "fbank" if up == "fbank" else "hubert"},
            "featurizer": {"layer": None}, "seed": seed, "config": {"run": {"data": str(data or "")}}}


def _write(root, rows, targets=None):
    for i, r in enumerate(rows):
        d = root / f"{r['task']}_{r['upstream']['name']}_{i}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(r))  # json.dumps writes NaN as the bare token NaN
        if targets and r["task"] in targets:
            (d / "predictions_test.tsv").write_text("".join(f"u{j}\tx\t{t}\n" for j, t in enumerate(targets[r["task"]])))
    return root


@pytest.fixture()
def corpus(tmp_path):
    c = tmp_path / "corpus"
    c.mkdir()
    (c / "corpus.json").write_text(json.dumps({"name": "speechssl-espeak", "preset": "tiny", "seed": 0, "hours": 0.17}))
    return c


KS_TARGETS = ["_unknown_"] * 4 + ["yes", "no", "up"] * 3  # 13 clips, majority class 4/13


def _rows(corpus, seeds):
    rows = []
    for seed in range(1, seeds + 1):
        d = 0.01 * (seed - 1)
        rows += [_result("ks", "fbank", 2 / 13 + d, seed=seed, data=corpus),
                 _result("ks", "hubert", 5 / 13 + d, seed=seed, data=corpus),
                 _result("pr", "fbank", 0.62 + d, metric="per", higher=False, seed=seed, data=corpus, count=10),
                 _result("pr", "hubert", 0.83 - d, metric="per", higher=False, seed=seed, data=corpus, count=10),
                 _result("qbe", "hubert", 0.36 + d, metric="mtwv", seed=seed, data=corpus, count=6)]
    return rows


@pytest.mark.parametrize("seeds,wording", [(1, "Each cell is a single run (one seed), so no spread across runs "
                                                "is known."),
                                           (3, "Each cell is the mean ± std over 3 runs (seeds).")])
def test_header_says_single_run_or_mean_over_n_and_names_the_corpus(tmp_path, corpus, seeds, wording):
    md = render_markdown(collect_results([_write(tmp_path / "exp", _rows(corpus, seeds), {"ks": KS_TARGETS})]))
    assert wording in md
    assert ("mean ± std" in md) == (seeds > 1)
    assert f"Corpus: `{corpus}` (speechssl-espeak, preset `tiny`, seed 0, 0.17 h)." in md


def test_header_for_mixed_run_counts_and_unknown_corpus(tmp_path):
    rows = [_result("ks", "fbank", 0.2, seed=s, data=tmp_path / "nowhere") for s in (1, 2)]
    rows.append(_result("ks", "hubert", 0.4, data=tmp_path / "nowhere"))
    md = render_markdown(collect_results([_write(tmp_path / "exp", rows)]))
    assert "Cells with several runs show mean ± std (runs); the others are single runs (1 of 2 cells)." in md
    assert "no corpus.json there" in md and "preset unknown" in md


def test_figure_has_error_bars_values_reference_lines_and_shared_axes(tmp_path, corpus):
    results = collect_results([_write(tmp_path / "exp", _rows(corpus, 1), {"ks": KS_TARGETS})])
    fig = plot_metrics(results, tmp_path / "metrics.png")
    assert (tmp_path / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    axes = {ax.get_title().split(":")[0]: ax for ax in fig.axes if ax.get_title()}
    assert list(axes) == ["pr", "ks", "qbe"]
    ks, pr, qbe = axes["ks"], axes["pr"], axes["qbe"]
    # ks: accuracy on 13 clips -> 95 % Wilson error bars on both bars, at the oracle's bounds
    (bars,) = [c for c in ks.containers if isinstance(c, ErrorbarContainer)]
    segments = bars.lines[2][0].get_segments()
    for seg, p in zip(segments, (2 / 13, 5 / 13)):
        lo, hi = wilson_interval(p, 13)
        assert seg[0][1] == pytest.approx(lo * 100) and seg[1][1] == pytest.approx(hi * 100)
    # hand-computed Wilson bound for 5 of 13: centre (p + z²/2n)/(1 + z²/n), half-width z/(1+z²/n)·√(p(1-p)/n + z²/4n²)
    z, n, p = 1.96, 13, 5 / 13
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_interval(p, n)[1] == pytest.approx((p + z * z / (2 * n)) / (1 + z * z / n) + half)
    # single runs of PER / MTWV carry no interval: no error bars there
    assert not [c for c in pr.containers if isinstance(c, ErrorbarContainer)]
    # reference lines: chance (majority class 4/13), fbank, best
    lines = {ln.get_gid(): ln.get_ydata()[0] for ln in ks.lines if ln.get_gid() in ("chance", "fbank", "best")}
    assert lines == pytest.approx({"chance": 400 / 13, "fbank": 200 / 13, "best": 500 / 13})
    pr_lines = {ln.get_gid(): ln.get_ydata()[0] for ln in pr.lines if ln.get_gid() in ("chance", "fbank", "best")}
    assert pr_lines == pytest.approx({"chance": 100.0, "fbank": 62.0, "best": 62.0})
    assert {ln.get_gid() for ln in qbe.lines} >= {"chance", "best"}  # no fbank run on qbe: no fbank line
    assert "fbank" not in {ln.get_gid() for ln in qbe.lines}
    # the value of every bar is written on it
    assert [t.get_text() for t in ks.texts if t.get_gid() == "value"] == ["15.4", "38.5"]
    assert [t.get_text() for t in qbe.texts if t.get_gid() == "value"] == ["0.360"]  # no fbank run on qbe
    # y-axes from 0 over the metric's whole range (0-100 %, MTWV 0-1), not zoomed on the bars
    assert ks.get_ylim()[0] == pr.get_ylim()[0] == qbe.get_ylim()[0] == 0
    assert ks.get_ylim()[1] >= 100 and pr.get_ylim()[1] >= 100 and 1 <= qbe.get_ylim()[1] < 2
    assert "speechssl-espeak preset tiny" in fig._suptitle.get_text() and "single runs" in fig._suptitle.get_text()


def test_figure_with_several_runs_draws_std_bars_and_the_runs(tmp_path, corpus):
    fig = plot_metrics(collect_results([_write(tmp_path / "exp", _rows(corpus, 3))]), tmp_path / "m.png")
    pr = next(ax for ax in fig.axes if ax.get_title().startswith("pr"))
    (bars,) = [c for c in pr.containers if isinstance(c, ErrorbarContainer)]
    seg = bars.lines[2][0].get_segments()[0]
    std = 100 * 0.01  # values 0.62, 0.63, 0.64: sample std 0.01
    assert seg[0][1] == pytest.approx(63.0 - std) and seg[1][1] == pytest.approx(63.0 + std)
    dots = [ln for ln in pr.lines if ln.get_gid() == "runs"]
    assert len(dots) == 2 and sorted(dots[0].get_ydata()) == pytest.approx([62.0, 63.0, 64.0])
    assert "mean of 3 runs" in fig._suptitle.get_text()


def test_nan_results_give_valid_json_with_null_and_the_file(tmp_path, corpus):
    rows = _rows(corpus, 1)
    rows[1]["value"] = float("nan")  # ks / hubert diverged
    rows[1]["metrics"]["accuracy"] = float("nan")
    exp = _write(tmp_path / "exp", rows, {"ks": KS_TARGETS})
    assert "NaN" in next(exp.glob("ks_hubert_*/result.json")).read_text()
    out = write_report([exp], tmp_path / "report")
    text = (tmp_path / "report" / "report.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in report.json"))
    cell = next(r for r in summary if r["task"] == "ks" and r["upstream"] == "hubert")
    assert cell["values"] == [None] and cell["mean"] is None and cell["interval"] is None
    assert cell["nan_from"] == [str(next(exp.glob("ks_hubert_*")) / "result.json")]
    ok = next(r for r in summary if r["task"] == "ks" and r["upstream"] == "fbank")
    assert ok["nan_from"] == [] and ok["mean"] == pytest.approx(2 / 13)
    assert ok["chance"] == {"value": pytest.approx(4 / 13), "what": "majority class '_unknown_'"}
    md = out.read_text()
    row = next(line for line in md.splitlines() if line.startswith("| `hubert`"))
    assert "| NaN |" in row
    # the NaN cell is not "best": fbank, the only finite ks cell, is bold
    assert next(line for line in md.splitlines() if line.startswith("| `fbank`")).split(" | ")[2] == "**15.38**"
    assert "NaN: 1 run(s) scored NaN" in md and cell["nan_from"][0] in md


def test_chance_levels():
    assert chance_level("per") == (1.0, "empty output")
    assert chance_level("eer") == (0.5, "random scores")
    assert chance_level("mtwv") == (0.0, "detecting nothing")
    assert chance_level("accuracy", []) is None
    assert chance_level("miou") is None


def test_runs_table_gives_hub_info_sha_next_to_the_fingerprint(tmp_path):
    """`hub info` prints the model.safetensors digest; the report shows it beside its own fingerprint."""
    from speechssl import hub
    from speechssl.downstream.upstreams import upstream_hash
    from speechssl.registry import get_method

    spec = get_method("hubert")
    model = spec.build(spec.presets["tiny"]())
    model_dir = tmp_path / "model"
    hub.save(model, model_dir)
    info = hub.info(model_dir)
    fingerprint = upstream_hash(hub.load(model_dir))
    r = _result("ks", "mine", 0.5, up_hash=fingerprint)
    r["upstream"]["ckpt"] = str(model_dir)
    md = render_markdown(collect_results([_write(tmp_path / "exp", [r])]))
    row = next(line for line in md.splitlines() if line.startswith("| ks | `mine`"))
    assert f"| {fingerprint[:12]} | {info.sha256[:12]} |" in row
    assert info.sha256 != fingerprint  # two digests of one model: the table says which is which
    assert "`speechssl hub info` prints a different digest" in md
    assert summarize(collect_results([tmp_path / "exp"]))[0]["hub_sha256"] == info.sha256


def test_panels_of_one_metric_kind_share_one_y_axis(tmp_path):
    """ks at 2 and 5 of 13 and sid at 90 % share one accuracy axis (no per-panel zoom that makes
    2 vs 5 look like a landslide); an error rate above 100 % widens only the error-rate panels."""
    rows = [_result("ks", "fbank", 2 / 13), _result("ks", "hubert", 5 / 13),
            _result("sid", "fbank", 0.9, count=10), _result("sid", "hubert", 0.7, count=10),
            _result("pr", "fbank", 1.31, metric="per", higher=False), _result("asr", "fbank", 0.97, metric="wer",
                                                                              higher=False)]
    fig = plot_metrics(collect_results([_write(tmp_path / "exp", rows)]), tmp_path / "m.png")
    axes = {ax.get_title().split(":")[0]: ax for ax in fig.axes if ax.get_title()}
    assert axes["ks"].get_ylim() == axes["sid"].get_ylim() == (0.0, pytest.approx(114.0))
    assert axes["pr"].get_ylim() == axes["asr"].get_ylim() == (0.0, pytest.approx(131.0 * 1.14))
