"""Bad input, verb by verb (issue 23 items 5 and 6 and the validator's coverage).

Every case runs ``speechssl -q VERB ...`` in-process on one defective user file and asserts
what a user sees: a non-zero exit status; exactly one ERROR line on stderr, naming the file
(or field) and containing the fragment that says what was wrong; no continuation lines (every
stderr line is a log record); no traceback; never torch's advice to load with
``weights_only=False``. ``CASES`` lists the cases per verb; the closing note of issue 23 counts
them.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from speechssl import audio
from speechssl.cli import main as cli
from speechssl.data.manifest import write_manifest

_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
_BAR = re.compile(r"\d+%\|")
SIZES = (8000, 9000, 10000)


# ---------------------------------------------------------------------------------- workspace

@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small workspace every case copies from: audio + manifest, fbank features, a k-means
    model, a tiny HuBERT model directory, a training checkpoint and a pretraining example."""
    from speechssl import hub

    root = tmp_path_factory.mktemp("bad_inputs")
    wav = root / "corpus" / "wav"
    rng = np.random.default_rng(0)
    for i, n in enumerate(SIZES):
        audio.save(wav / f"u{i}.wav", (0.1 * rng.standard_normal(n)).astype(np.float32))
    write_manifest(root / "corpus" / "train.tsv", wav, [(f"u{i}.wav", n) for i, n in enumerate(SIZES)])
    assert cli(["-q", "features", "dump", "--manifest-dir", str(root / "corpus"), "--split", "train",
                "--feature", "fbank", "--out", str(root / "feats"), "--no-progress"]) == 0
    assert cli(["-q", "kmeans", "fit", "--feat-dir", str(root / "feats"), "--split", "train", "--nshard", "1",
                "--n-clusters", "3", "--out", str(root / "km.safetensors")]) == 0
    from speechssl.registry import get_method

    spec = get_method("hubert")
    torch.manual_seed(0)
    hub.save(spec.model_cls.from_config(spec.preset("tiny")), root / "model")
    return root


@pytest.fixture(scope="module", autouse=True)
def _no_fork_threads():
    torch.set_num_threads(1)
    yield


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    capsys.readouterr()
    status = cli(["-q", *argv])
    err = capsys.readouterr().err
    # progress bars (tqdm, '\r'-separated) are not messages
    lines = [part for line in err.splitlines() for part in line.split("\r")]
    return status, [line for line in lines if line.strip() and not _BAR.search(line)]


def _check(status: int, lines: list[str], fragments: tuple[str, ...]) -> str:
    text = "\n".join(lines)
    assert status != 0, f"exit status 0 (silently accepted); stderr:\n{text}"
    assert "Traceback" not in text and "weights_only" not in text, text
    assert all(_RECORD.match(line) for line in lines), f"a message spans several lines:\n{text}"
    errors = [line for line in lines if " ERROR " in line]
    assert len(errors) == 1, f"expected one ERROR line:\n{text}"
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


# ------------------------------------------------------------------------------ file makers

def _text(path: Path, text: str = "101 hello world\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _garbage(path: Path, n: int = 300) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _corpus(ws: Path, tmp: Path, edit: Callable[[Path], None] | None = None) -> Path:
    d = _copy_tree(ws / "corpus", tmp / "corpus")
    tsv = d / "train.tsv"
    tsv.write_text(tsv.read_text().replace(str(ws / "corpus"), str(d)))
    if edit is not None:
        edit(d)
    return d


def _rows(d: Path) -> list[str]:
    return (d / "train.tsv").read_text().splitlines()


def _write_rows(d: Path, lines: list[str]) -> None:
    (d / "train.tsv").write_text("\n".join(lines) + "\n")


def _feats(ws: Path, tmp: Path) -> Path:
    return _copy_tree(ws / "feats", tmp / "feats")


def _legacy_pickle_of_system(path: Path) -> Path:
    path.write_bytes(pickle.dumps(os.system, protocol=2))
    return path


def _zip_with_system(path: Path) -> Path:
    """A torch.save-style zip whose data.pkl calls os.system (never unpickled by speechssl)."""
    torch.save({"w": torch.zeros(2)}, path)
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    key = next(k for k in members if k.endswith("data.pkl"))
    members[key] = b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00trueq\x00\x85q\x01Rq\x02."
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _flip_tensor_bit(path: Path) -> Path:
    """Flip one bit inside the largest tensor record of a torch.save zip (the pickle intact)."""
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    key = max((k for k in members if "/data/" in k), key=lambda k: len(members[k]))
    data = bytearray(members[key])
    data[len(data) // 2] ^= 0x10
    members[key] = bytes(data)
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return path


def _nan_model(ws: Path, tmp: Path, prefix: str = "encoder.layers.0") -> Path:
    """A model directory with NaN weights, as an older speechssl (no finite check) wrote it."""
    import speechssl._hub.modeldir as md
    from speechssl import hub

    model = hub.load(ws / "model")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(prefix):
                p.fill_(float("nan"))
    check, md.check_finite_weights = md.check_finite_weights, lambda *a: None
    try:
        hub.save(model, tmp / "nan_model")
    finally:
        md.check_finite_weights = check
    return tmp / "nan_model"


def _nan_checkpoint(ws: Path, tmp: Path) -> Path:
    """A Trainer-layout checkpoint of the tiny HuBERT with one NaN weight (digests valid)."""
    from speechssl import hub
    from speechssl.train.checkpoint import DIGESTS, tensor_digests
    from speechssl.atomic import atomic_torch_save

    model = hub.load(ws / "model")
    sd = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    sd["model.encoder.layers.0.fc1.weight"][0, 0] = float("nan")
    from speechssl.config import to_dict

    state = {"model": sd, "upstream": {"method": "hubert", "config": to_dict(model.config), "prefix": "model"},
             "num_updates": 7}
    path = tmp / "checkpoint_7.pt"
    atomic_torch_save({**state, DIGESTS: tensor_digests(state)}, path)
    return path


# ------------------------------------------------------------------------------------- cases
# Each case: (verb, id, build(ws, tmp) -> (argv, fragments that the one ERROR line must hold)).

def _dump_argv(d: Path, tmp: Path, *extra: str) -> list[str]:
    return ["features", "dump", "--manifest-dir", str(d), "--split", "train", "--out", str(tmp / "out"),
            "--feature", "fbank", "--no-progress", *extra]


def _dump_case(edit: Callable[[Path], None], *fragments: str):
    def build(ws: Path, tmp: Path):
        d = _corpus(ws, tmp, edit)
        return _dump_argv(d, tmp), ("train.tsv", *fragments)
    return build


def _upstream_case(make: Callable[[Path, Path], Path], *fragments: str, layer: str = "2"):
    def build(ws: Path, tmp: Path):
        d = _corpus(ws, tmp)
        up = make(ws, tmp)
        argv = _dump_argv(d, tmp)
        argv[argv.index("fbank")] = "upstream"
        return argv + ["--upstream", str(up), "--layer", layer], fragments
    return build


def _stats_case(edit: Callable[[Path], Path | None], *fragments: str):
    def build(ws: Path, tmp: Path):
        f = _feats(ws, tmp)
        named = edit(f)
        return (["features", "stats", "--feat-dir", str(f), "--split", "train", "--nshard", "1",
                 "--out", str(tmp / "cmvn.npy")], (str(named) if named else "train_0_1", *fragments))
    return build


def _set_nan(f: Path) -> Path:
    a = np.load(f / "train_0_1.npy", mmap_mode="r+")
    a[60, 5] = np.nan
    a.flush()
    return f / "train_0_1.npy"


def _kmeans_fit_case(edit: Callable[[Path], Path], *fragments: str):
    def build(ws: Path, tmp: Path):
        f = _feats(ws, tmp)
        named = edit(f)
        return (["kmeans", "fit", "--feat-dir", str(f), "--split", "train", "--nshard", "1", "--n-clusters", "2",
                 "--out", str(tmp / "km.safetensors")], (str(named), *fragments))
    return build


def _km_file_case(make: Callable[[Path], Path], *fragments: str, verb: str = "info"):
    def build(ws: Path, tmp: Path):
        km = make(tmp / "km.safetensors")
        if verb == "info":
            return ["kmeans", "info", str(km)], (str(km), *fragments)
        return (["dump-labels", "--feat-dir", str(ws / "feats"), "--split", "train", "--nshard", "1", "--km", str(km),
                 "--out", str(tmp / "lab")], (str(km), *fragments))
    return build


def _labels_case(edit: Callable[[Path], Path], *fragments: str):
    def build(ws: Path, tmp: Path):
        f = _feats(ws, tmp)
        named = edit(f)
        return (["dump-labels", "--feat-dir", str(f), "--split", "train", "--nshard", "1",
                 "--km", str(ws / "km.safetensors"), "--out", str(tmp / "lab")], (str(named), *fragments))
    return build


def _hub_case(make: Callable[[Path, Path], Path], *fragments: str, action: str = "info", names_source: bool = True):
    def build(ws: Path, tmp: Path):
        src = make(ws, tmp)
        argv = ["hub", "info", str(src)] if action == "info" else ["hub", "convert", str(src), str(tmp / "dst")]
        return argv, ((str(src.name),) if names_source else ()) + fragments
    return build


def _model_dir_edit(edit: Callable[[Path], None]):
    def make(ws: Path, tmp: Path) -> Path:
        d = _copy_tree(ws / "model", tmp / "model")
        edit(d)
        return d
    return make


def _config_json(d: Path, text: str) -> None:
    (d / "config.json").write_text(text)


def _topic_case(edit: Callable[[Path], list[str]], *fragments: str):
    """cluster topic-metrics over 3 manifest rows with --ref labels; ``edit`` breaks one file."""
    def build(ws: Path, tmp: Path):
        d = _corpus(ws, tmp)
        _text(d / "train.topic", "0\n1\n0\n")
        _text(d / "train.spk", "a\nb\na\n")
        extra = edit(d)
        return (["cluster", "topic-metrics", "--topic", str(d / "train.topic"), "--manifest", str(d / "train.tsv"),
                 "--ref", f"spk={d / 'train.spk'}", *extra], fragments)
    return build


def _pretrain_case(edit: Callable[[Path, Path], list[str]], *fragments: str):
    def build(ws: Path, tmp: Path):
        from speechssl.registry import get_method

        data = tmp / "data"
        get_method("hubert").example(data)
        extra = edit(tmp, data)
        return (["pretrain", "--method", "hubert", "--preset", "tiny", "--data", str(data), "--exp-dir",
                 str(tmp / "exp"), "trainer.max_updates=50", *extra], fragments)
    return build


def _resume_from(write: Callable[[Path], None]):
    def edit(tmp: Path, data: Path) -> list[str]:
        (tmp / "exp").mkdir()
        write(tmp / "exp" / "checkpoint_last.pt")
        return []
    return edit


def _data_edit(edit: Callable[[Path], None]):
    def run(tmp: Path, data: Path) -> list[str]:
        edit(data)
        return []
    return run


def _km_rows(data: Path) -> list[str]:
    return (data / "train.km").read_text().splitlines()


def _config_file(text: str):
    def edit(tmp: Path, data: Path) -> list[str]:
        return ["--config", str(_text(tmp / "cfg.yaml", text))]
    return edit


def _downstream_case(text: str, *fragments: str):
    def build(ws: Path, tmp: Path):
        cfg = _text(tmp / "ds.yaml", text)
        return (["downstream", "-m", "train", "-d", "ks", "-u", "fbank", "--data", str(tmp / "nodata"),
                 "-p", str(tmp / "exp"), "-c", str(cfg)], ("ds.yaml", *fragments))
    return build


def _ks_data(ws: Path, tmp: Path) -> Path:
    """A keyword-spotting data dir (keywords/{train,valid,test}.tsv + .kw) over the workspace audio."""
    data = tmp / "ksdata"
    sub = data / "keywords"
    _copy_tree(ws / "corpus" / "wav", sub / "wav")
    for split in ("train", "valid", "test"):
        write_manifest(sub / f"{split}.tsv", sub / "wav", [("u0.wav", SIZES[0]), ("u1.wav", SIZES[1])])
        _text(sub / f"{split}.kw", "yes\nno\n")
    return data


@pytest.fixture(scope="module")
def ks_exp(ws: Path) -> Path:
    """A finished 2-update ks experiment on the fbank baseline (for -m evaluate cases)."""
    data = _ks_data(ws, ws / "ks")
    exp = ws / "ks" / "exp"
    assert cli(["-q", "downstream", "-m", "train", "-d", "ks", "-u", "fbank", "--data", str(data), "-p", str(exp),
                "-o", "trainer.max_updates=2", "--no-cache"]) == 0
    return exp


def _ks_case(edit: Callable[[Path], None], *fragments: str):
    def build(ws: Path, tmp: Path):
        data = _ks_data(ws, tmp)
        edit(data / "keywords")
        return (["downstream", "-m", "train", "-d", "ks", "-u", "fbank", "--data", str(data), "-p", str(tmp / "exp"),
                 "-o", "trainer.max_updates=2", "--no-cache"], fragments)
    return build


def _nan_upstream_case(ws: Path, tmp: Path):
    """The cache refuses NaN hidden states naming upstream, layer and utterance (not a later
    "5 updates in a row had a non-finite loss")."""
    data = _ks_data(ws, tmp)
    up = _nan_model(ws, tmp)
    return (["downstream", "-m", "train", "-d", "ks", "-u", str(up), "--data", str(data), "-p", str(tmp / "exp"),
             "-o", "trainer.max_updates=2", "--cache-dir", str(tmp / "cache")],
            ("train.tsv:", "upstream", "nan_model", "layer 1", "non-finite"))


@pytest.fixture(scope="module")
def images(ws: Path) -> Path:
    """The tiny image corpus (scenes), rendered once."""
    out = ws / "images"
    assert cli(["-q", "corpus", "images", "--preset", "tiny", "--no-digits", "--out", str(out)]) == 0
    return out


def _image_case(edit: Callable[[Path], None], *fragments: str):
    """downstream image_probe on a copy of the scenes subset with one defect."""
    def build(ws: Path, tmp: Path):
        data = tmp / "img"
        _copy_tree(ws / "images" / "scenes", data / "scenes")
        edit(data / "scenes")
        return (["downstream", "-m", "train", "-d", "image_probe", "-u", "pixels", "--data", str(data), "-p",
                 str(tmp / "exp"), "-o", "trainer.max_updates=2", "--no-cache"], fragments)
    return build


def _tsv_replace(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new, 1))


def _evaluate_case(edit: Callable[[Path], None], *fragments: str):
    def build(ws: Path, tmp: Path):
        exp = _copy_tree(ws / "ks" / "exp", tmp / "exp")
        edit(exp)
        return ["downstream", "-m", "evaluate", "-e", str(exp)], fragments
    return build


def _manifest_case(make: Callable[[Path], None], *fragments: str):
    def build(ws: Path, tmp: Path):
        src = tmp / "audio"
        src.mkdir()
        make(src)
        return ["manifest", str(src), "--dest", str(tmp / "m"), "--no-progress"], fragments
    return build


def _librispeech_case(make: Callable[[Path], None], *fragments: str, verb: str = "import-librispeech"):
    def build(ws: Path, tmp: Path):
        root = tmp / "src"
        root.mkdir()
        make(root)
        return ["corpus", verb, str(root), "--out", str(tmp / "out")], fragments
    return build


def _chapter(root: Path, trans: str, flac: bool = True) -> None:
    d = root / "train-clean-5" / "19" / "198"
    _text(d / "19-198.trans.txt", trans)
    if flac:
        audio.save(d / "19-198-0001.flac", np.zeros(1600, np.float32))


def _trunc_shard(f: Path) -> Path:
    return _truncate(f / "train_0_1.npy")


def _text_shard(f: Path) -> Path:
    return _text(f / "train_0_1.npy")


def _object_shard(f: Path) -> Path:
    np.save(f / "train_0_1.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return f / "train_0_1.npy"


def _bad_len(f: Path) -> Path:
    p = f / "train_0_1.len"
    p.write_text(p.read_text().replace(p.read_text().split()[0], "x7", 1))
    return p


def _short_len(f: Path) -> Path:
    p = f / "train_0_1.len"
    p.write_text("\n".join(p.read_text().split()[:-1]) + "\n")
    return p


def _missing_shard(f: Path) -> Path:
    (f / "train_0_1.npy").unlink()
    return f / "train_0_1.npy"


def _lda_case(edit: Callable[[Path], list[str]], *fragments: str):
    """cluster lda over unit labels of 3 rows (train) + 2 (valid); ``edit`` breaks one file."""
    def build(ws: Path, tmp: Path):
        lab = tmp / "lab"
        _text(lab / "train.km", "1 1 2 3\n4 4 5\n1 2\n")
        _text(lab / "valid.km", "1 2\n3 3\n")
        extra = edit(lab)
        return (["cluster", "lda", "--labels", str(lab), "--num-topics", "2", "--passes", "1", "--iterations", "5",
                 "--no-progress", *extra], fragments)
    return build


def _metrics_case(km: str, ali: str, *fragments: str):
    def build(ws: Path, tmp: Path):
        k, a = _text(tmp / "v.km", km), _text(tmp / "v.phn_ali", ali)
        return (["cluster", "metrics", "--km", str(k), "--label-rate", "100", "--phn-ali", str(a)], fragments)
    return build


CASES: dict[str, list[tuple[str, Callable]]] = {
    "features dump": [
        ("no root line", _dump_case(lambda d: _write_rows(d, _rows(d)[1:]), ":1:", "root directory")),
        ("duplicate row", _dump_case(lambda d: _write_rows(d, _rows(d) + [_rows(d)[1]]), ":5:", "duplicate row")),
        ("wrong sample count", _dump_case(lambda d: _write_rows(d, [_rows(d)[0], "u0.wav\t8100", *_rows(d)[2:]]),
                                          ":2", "num_samples is 8100")),
        ("count not an integer", _dump_case(lambda d: _write_rows(d, [_rows(d)[0], "u0.wav\tmany", *_rows(d)[2:]]),
                                            ":2:", "must be an integer")),
        ("missing audio", _dump_case(lambda d: (d / "wav" / "u1.wav").unlink(), ":3", "u1.wav not found")),
        ("text file as .wav", _dump_case(lambda d: _text(d / "wav" / "u2.wav"), ":4", "u2.wav")),
        ("too short for a frame", _dump_case(
            lambda d: (audio.save(d / "wav" / "s.wav", np.zeros(100, np.float32)),
                       _write_rows(d, _rows(d) + ["s.wav\t100"])), ":5", "100 samples, fewer than")),
        ("three fields", _dump_case(lambda d: _write_rows(d, _rows(d) + ["a.wav\t1\t2"]), ":5:",
                                    "expected 2 tab-separated fields")),
        ("upstream: text file as .pt", _upstream_case(lambda ws, t: _text(t / "model.pt"), "model.pt",
                                                      "not a PyTorch checkpoint: found a text file")),
        ("upstream: garbage .pt", _upstream_case(lambda ws, t: _garbage(t / "model.pt"), "model.pt",
                                                 "bytes of binary data")),
        ("upstream: truncated zip .pt", _upstream_case(
            lambda ws, t: _truncate((torch.save({"a": torch.ones(64)}, t / "m.pt"), t / "m.pt")[1]),
            "m.pt", "truncated or damaged")),
        ("upstream: pickle calling os.system", _upstream_case(lambda ws, t: _zip_with_system(t / "evil.pt"),
                                                              "evil.pt", "system")),
        ("upstream: NaN weights", _upstream_case(_nan_model, "train.tsv:2", "upstream", "nan_model",
                                                 "non-finite features")),
        ("upstream: layer out of range", _upstream_case(lambda ws, t: ws / "model", "layer 99", layer="99")),
    ],
    "features stats": [
        ("truncated .npy", _stats_case(_trunc_shard, "truncated")),
        ("text as .npy", _stats_case(_text_shard, "not a .npy file: found a text file")),
        ("object .npy", _stats_case(_object_shard, "Python objects")),
        ("NaN frame", _stats_case(_set_nan, "frame 60", "nan", "manifest row")),
        ("bad .len token", _stats_case(_bad_len, ":1:", "expected a frame count")),
        (".len shorter than .npy", _stats_case(_short_len, "frames")),
        ("missing shard", _stats_case(_missing_shard, "not found")),
    ],
    "kmeans fit": [
        ("truncated .npy", _kmeans_fit_case(_trunc_shard, "truncated")),
        ("text as .npy", _kmeans_fit_case(_text_shard, "not a .npy file")),
        ("bad .len token", _kmeans_fit_case(_bad_len, ":1:", "expected a frame count")),
        ("NaN frame", _kmeans_fit_case(lambda f: (_set_nan(f), "train_0_1.npy")[1], "NaN", "row 60")),
    ],
    "kmeans info": [
        ("text file", _km_file_case(lambda p: _text(p), "found a text file", "k-means model")),
        ("garbage", _km_file_case(lambda p: _garbage(p), "bytes of binary data", "k-means model")),
        ("empty", _km_file_case(lambda p: _text(p, ""), "found an empty file")),
        ("safetensors without centroids", _km_file_case(
            lambda p: (__import__("safetensors.torch").torch.save_file({"x": torch.zeros(2)}, str(p)), p)[1],
            "no 'centroids' tensor")),
    ],
    "dump-labels": [
        ("text file as model", _km_file_case(lambda p: _text(p), "found a text file", verb="labels")),
        ("truncated features", _labels_case(_trunc_shard, "truncated")),
        ("bad .len token", _labels_case(_bad_len, "expected a frame count")),
        ("NaN frame", _labels_case(_set_nan, "NaN", "frame 60")),
    ],
    "cluster lda": [
        ("unit not an integer", _lda_case(lambda d: (_text(d / "train.km", "1 2\nx 3\n1\n"), [])[1], "train.km:2")),
        ("negative unit", _lda_case(lambda d: (_text(d / "train.km", "1 2\n-3 3\n1\n"), [])[1], "train.km:2")),
        ("rows != manifest", _lda_case(lambda d: (_text(d / "train.tsv", "/x\na.wav\t10\nb.wav\t10\n"),
                                                  ["--manifest-dir", str(d)])[1], "train.km", "3 rows", "2")),
        ("missing fit split", _lda_case(lambda d: ((d / "train.km").unlink(), [])[1], "train.km", "not found")),
        ("run state not JSON", _lda_case(lambda d: (_text(d / "lda.json", "{oops"), [])[1],
                                         "lda.json:1:", "not valid JSON")),
        ("run state a list", _lda_case(lambda d: (_text(d / "lda.json", "[]"), [])[1], "lda.json", "JSON object")),
    ],
    "cluster metrics": [
        ("unit not an integer", _metrics_case("1 1 x\n", "a a a\n", "v.km:1")),
        ("rows differ", _metrics_case("1 1 1\n2 2 2\n", "a a a\n", "v.km", "2")),
        ("durations differ", _metrics_case("1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\n", "a a a\n", "row 1", "v.km",
                                           "16 frames")),
    ],
    "cluster topic-metrics": [
        ("topic not an integer", _topic_case(lambda d: (_text(d / "train.topic", "0\nx\n0\n"), [])[1],
                                             "train.topic:2", "topic id")),
        ("topic rows != manifest", _topic_case(lambda d: (_text(d / "train.topic", "0\n1\n"), [])[1],
                                               "train.topic", "2 rows", "3")),
        ("ref rows != topic", _topic_case(lambda d: (_text(d / "train.spk", "a\n"), [])[1], "train.spk", "1 rows")),
        ("manifest without root", _topic_case(lambda d: (_write_rows(d, _rows(d)[1:]), [])[1], "train.tsv:1:")),
        ("speakers.json not JSON", _topic_case(
            lambda d: (_text(d / "c" / "speakers.json", "[{\"id\": 1,,}]"), ["--corpus", str(d / "c")])[1],
            "speakers.json:1:", "not valid JSON")),
    ],
    "hub info": [
        ("text file as .pt", _hub_case(lambda ws, t: _text(t / "x.pt"), "found a text file starting '101 hello")),
        ("garbage .pt", _hub_case(lambda ws, t: _garbage(t / "x.pt"), "bytes of binary data")),
        ("empty .pt", _hub_case(lambda ws, t: _text(t / "x.pt", ""), "an empty file")),
        ("legacy pickle of os.system", _hub_case(lambda ws, t: _legacy_pickle_of_system(t / "x.pt"),
                                                 "not a PyTorch checkpoint")),
        ("zip pickle of os.system", _hub_case(lambda ws, t: _zip_with_system(t / "x.pt"), "posix.system")),
        ("config.json not JSON", _hub_case(_model_dir_edit(lambda d: _config_json(d, "{\"method\": ")),
                                           "config.json:1:", "not valid JSON")),
        ("config.json a list", _hub_case(_model_dir_edit(lambda d: _config_json(d, "[1, 2]")), "config.json",
                                         "JSON object")),
        ("weights flipped", _hub_case(_model_dir_edit(lambda d: (d / "model.safetensors").write_bytes(
            (d / "model.safetensors").read_bytes()[:-1] + b"\x00")), "sha256 mismatch")),
    ],
    "hub convert": [
        ("text file as .pt", _hub_case(lambda ws, t: _text(t / "x.pt"), "found a text file", action="convert")),
        ("truncated checkpoint", _hub_case(
            lambda ws, t: _truncate(_nan_checkpoint(ws, t)), "truncated or damaged", action="convert")),
        # the ERROR names the directory being written; a WARNING line before it names the source's file
        ("NaN model dir", _hub_case(_nan_model, "dst: refusing to write", "NaN", "encoder.layers.0",
                                    action="convert", names_source=False)),
        ("NaN training checkpoint", _hub_case(_nan_checkpoint, "refusing to write", "fc1.weight", "1 NaN",
                                              action="convert")),
        ("weights not safetensors", _hub_case(_model_dir_edit(lambda d: _text(d / "model.safetensors")),
                                              "model.safetensors", action="convert")),
    ],
    "pretrain": [
        ("YAML duplicate key", _pretrain_case(_config_file("trainer:\n  max_updates: 2\n  max_updates: 3\n"),
                                              "cfg.yaml:3:", "duplicate key 'max_updates'", "first on line 2")),
        ("YAML duplicate section", _pretrain_case(_config_file("model: {}\ntrainer: {}\nmodel: {}\n"),
                                                  "cfg.yaml:3:", "duplicate key 'model'")),
        ("YAML syntax", _pretrain_case(_config_file("trainer: [1,\n"), "cfg.yaml:2:", "not valid YAML")),
        ("YAML top-level list", _pretrain_case(_config_file("- 1\n"), "cfg.yaml", "mapping")),
        ("override duplicate key", _pretrain_case(lambda t, d: ["trainer.optim={lr: 1, lr: 2}"],
                                                  "duplicate key 'lr'")),
        ("manifest without root", _pretrain_case(_data_edit(lambda d: (d / "train.tsv").write_text(
            "".join((d / "train.tsv").read_text().splitlines(True)[1:]))), "train.tsv:1:", "root directory")),
        ("wrong sample count", _pretrain_case(_data_edit(lambda d: (d / "train.tsv").write_text(
            (d / "train.tsv").read_text().replace("\t14805", "\t14000"))), "train.tsv:2", "num_samples is 14000")),
        ("unit label not an integer", _pretrain_case(_data_edit(lambda d: _text(
            d / "train.km", "\n".join(["x " + _km_rows(d)[0], *_km_rows(d)[1:]]) + "\n")), "train.km:1", "'x'")),
        ("unit label outside dict", _pretrain_case(_data_edit(lambda d: _text(
            d / "train.km", "\n".join(["99 " + _km_rows(d)[0], *_km_rows(d)[1:]]) + "\n")), "train.km:1", "99")),
        ("label rows != manifest", _pretrain_case(_data_edit(lambda d: _text(
            d / "train.km", "\n".join(_km_rows(d)[:-1]) + "\n")), "train.km", "rows")),
        ("dict line malformed", _pretrain_case(_data_edit(lambda d: _text(d / "dict.km.txt", "0 1\n1\n")),
                                               "dict.km.txt:2:", "symbol count")),
        ("resume: text checkpoint", _pretrain_case(_resume_from(lambda p: _text(p)), "checkpoint_last.pt",
                                                   "found a text file")),
        ("resume: garbage checkpoint", _pretrain_case(_resume_from(lambda p: _garbage(p)), "checkpoint_last.pt",
                                                      "binary data")),
        ("resume: pickle of os.system", _pretrain_case(_resume_from(lambda p: _zip_with_system(p)),
                                                       "checkpoint_last.pt", "posix.system")),
        ("resume: truncated checkpoint", _pretrain_case(
            _resume_from(lambda p: _truncate((torch.save({"model": {"w": torch.ones(4096)}}, p), p)[1])),
            "checkpoint_last.pt", "truncated or damaged")),
        ("resume: not a Trainer checkpoint", _pretrain_case(
            _resume_from(lambda p: torch.save({"weights": torch.ones(2)}, p)), "checkpoint_last.pt",
            "not a speechssl training checkpoint")),
    ],
    "downstream": [
        ("YAML duplicate key", _downstream_case("trainer:\n  max_updates: 2\n  max_updates: 3\n", "ds.yaml:3:",
                                                "duplicate key 'max_updates'")),
        ("YAML syntax", _downstream_case("run: {a: [\n", "not valid YAML")),
        ("YAML top-level list", _downstream_case("- run\n", "mapping")),
        ("manifest without root", _ks_case(lambda k: (k / "train.tsv").write_text("u0.wav\t8000\n"),
                                           "train.tsv:1:", "root directory")),
        ("wrong sample count", _ks_case(lambda k: (k / "valid.tsv").write_text(
            (k / "valid.tsv").read_text().replace("\t9000", "\t9001")), "valid.tsv:3", "num_samples is 9001")),
        ("label rows != manifest", _ks_case(lambda k: _text(k / "train.kw", "yes\nno\nextra\n"), "train.kw",
                                            "3 rows", "2")),
        ("missing audio", _ks_case(lambda k: (k / "wav" / "u1.wav").unlink(), "u1.wav not found")),
        ("NaN-weight upstream", _nan_upstream_case),
        ("evaluate: text checkpoint", _evaluate_case(lambda e: _text(e / "checkpoint_best.pt"),
                                                     "checkpoint_best.pt", "found a text file")),
        ("evaluate: truncated checkpoint", _evaluate_case(lambda e: _truncate(e / "checkpoint_best.pt"),
                                                          "checkpoint_best.pt", "truncated or damaged")),
        ("evaluate: flipped bit", _evaluate_case(lambda e: _flip_tensor_bit(e / "checkpoint_best.pt"),
                                                 "checkpoint_best.pt", "digest")),
        ("evaluate: config.yaml duplicate key", _evaluate_case(
            lambda e: _text(e / "config.yaml", "run:\n  a: 1\nrun:\n  b: 2\n"), "config.yaml:3:",
            "duplicate key 'run'")),
    ],
    "downstream (images)": [
        ("text file as .png", _image_case(lambda d: _text(d / "png" / "scene_train_00000.png"), "train.tsv:2",
                                          "scene_train_00000.png", "not an image")),
        ("size != manifest", _image_case(lambda d: _tsv_replace(d / "train.tsv", "scene_train_00001.png\t1024",
                                                                "scene_train_00001.png\t1000"),
                                         "train.tsv:3", "has size 1024 but the manifest says 1000")),
        ("missing image", _image_case(lambda d: (d / "png" / "scene_valid_00001.png").unlink(), "valid.tsv:3",
                                      "not found")),
        ("label outside dict", _image_case(lambda d: _text(d / "train.shape", "\n".join(
            ["hexagon", *(d / "train.shape").read_text().splitlines()[1:]]) + "\n"), "train.shape:1", "hexagon")),
    ],
    "manifest": [
        ("text file as .wav", _manifest_case(lambda s: (_text(s / "a.wav"), audio.save(
            s / "b.wav", np.zeros(1600, np.float32))), "a.wav", "not a readable audio file")),
        ("8 kHz audio", _manifest_case(lambda s: audio.save(s / "a.wav", np.zeros(800, np.float32), sample_rate=8000),
                                       "a.wav", "8000 Hz")),
        ("no audio files", _manifest_case(lambda s: _text(s / "notes.txt"), "no *.wav")),
    ],
    "corpus import-librispeech": [
        ("bad transcript line", _librispeech_case(lambda r: _chapter(r, "garbage line\n"), "19-198.trans.txt:1",
                                                  "expected")),
        ("transcript without audio", _librispeech_case(
            lambda r: _chapter(r, "19-198-0001 HELLO\n19-198-0002 WORLD\n"), "19-198-0002")),
        ("text file as .flac", _librispeech_case(
            lambda r: (_chapter(r, "19-198-0001 HELLO\n", flac=False),
                       _text(r / "train-clean-5" / "19" / "198" / "19-198-0001.flac")), "19-198-0001.flac")),
        ("not a LibriSpeech tree", _librispeech_case(lambda r: _text(r / "readme.txt"), "src")),
    ],
    "corpus import-speech-commands": [
        ("not a Speech Commands tree", _librispeech_case(lambda r: _text(r / "readme.txt"), "src",
                                                         verb="import-speech-commands")),
        ("testing_list names a missing clip", _librispeech_case(
            lambda r: (audio.save(r / "yes" / "a_nohash_0.wav", np.zeros(16000, np.float32)),
                       _text(r / "validation_list.txt", ""), _text(r / "testing_list.txt", "yes/b_nohash_0.wav\n")),
            "b_nohash_0.wav", "split lists", verb="import-speech-commands")),
    ],
}

_PARAMS = [pytest.param(verb, build, id=f"{verb}: {name}") for verb, cases in CASES.items() for name, build in cases]


@pytest.mark.parametrize("verb, build", _PARAMS)
def test_bad_input_is_one_line_naming_the_file(verb, build, ws, tmp_path, capsys, request) -> None:
    if "evaluate:" in request.node.callspec.id:
        request.getfixturevalue("ks_exp")
    if "(images)" in request.node.callspec.id:
        request.getfixturevalue("images")
    argv, fragments = build(ws, tmp_path)
    status, lines = _run(argv, capsys)
    line = _check(status, lines, tuple(fragments))
    print(line.split(" ERROR ", 1)[1])  # shown with -rP


def test_hub_info_flags_nan_weights_of_a_checkpoint(ws, tmp_path, capsys) -> None:
    """Correct handling rather than refusal: hub info describes the checkpoint (exit 0) and flags
    the NaN tensor in a warning and in the JSON's source; converting it is refused (CASES)."""
    ckpt = _nan_checkpoint(ws, tmp_path)
    capsys.readouterr()
    assert cli(["-q", "hub", "info", str(ckpt), "--json"]) == 0
    out = capsys.readouterr()
    assert "checkpoint_7.pt: tensor 'encoder.layers.0.fc1.weight' (float32, shape (768, 192)) holds 1 NaN" in out.err
    assert "1 NaN" in json.loads(out.out)["source"]["nonfinite"]


def test_case_counts_per_verb() -> None:
    """Every verb that reads user files has cases here (the counts go in the closing note)."""
    counts = {verb: len(cases) for verb, cases in CASES.items()}
    assert all(n >= 1 for n in counts.values()), counts
    assert sum(counts.values()) >= 60, counts
