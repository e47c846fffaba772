"""``speechssl aug-complexity`` on the tiny image corpus: the report's structure, its limits (the
resized image is the weakest augmentation, SimCLR's crops lower κ) and seeded reproducibility."""
from __future__ import annotations

import json

import pytest

from speechssl.cli import main


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from speechssl.corpus.image import build_image_corpus

    root = tmp_path_factory.mktemp("aug-corpus")
    build_image_corpus(root, "tiny", 0, digits=False)
    return root / "scenes"


def _run(scenes, out, *extra):
    argv = ["-q", "aug-complexity", "--data", str(scenes), "--labels", "shape,colour", "--images", "12",
            "--views", "3", "--dim", "4", "--out", str(out), *extra]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_report_and_prediction(scenes, tmp_path, capsys):
    rep = _run(scenes, tmp_path / "a.json", "--augment", "none", "--augment", "simclr", "--augment", "simclr+strong")
    names = [r["name"] for r in rep["reports"]]
    assert names == ["none", "simclr", "simclr+strong"] and rep["images"] == 12
    by = {r["name"]: r for r in rep["reports"]}
    for r in rep["reports"]:
        assert r["eigenvalues"][0] == pytest.approx(1.0)
        assert 1.0 - 1e-9 <= r["kappa2"] <= 12 + 1e-9  # k_X(x, x) lies between 1 and N
        for fit in r["labels"].values():
            assert 0 <= fit["invariance"] <= 1 + 1e-9
            assert fit["bound"] == pytest.approx(fit["approximation_error"] + r["kappa2"] * 4 / 12)
    assert by["none"]["kappa2"] > by["simclr"]["kappa2"] and by["none"]["trace"] > by["simclr"]["trace"]
    for label, best in rep["predictions"].items():
        assert best == min(rep["reports"], key=lambda r: r["labels"][label]["bound"])["name"]
    assert "predicted best" in capsys.readouterr().out
    again = _run(scenes, tmp_path / "b.json", "--augment", "simclr+strong")  # seeded: the same estimate
    assert again["reports"][0] == by["simclr+strong"]


def test_errors(scenes, tmp_path):
    assert main(["-q", "aug-complexity", "--data", str(scenes), "--labels", "nosuch", "--out", str(tmp_path / "x")]) == 1
    assert main(["-q", "aug-complexity", "--data", str(tmp_path), "--out", str(tmp_path / "x")]) == 1
