"""``speechssl audio prepare``: a folder of mixed audio -> 16 kHz mono files + manifests.

The oracle for the content is the resampler itself called directly (soxr, which the verb
uses) and, independently, scipy's polyphase resampler; lengths are S * 16000 / rate.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import soundfile
import soxr
from scipy.signal import resample_poly

from speechssl.cli import main as cli_main
from speechssl.commands.audio import JOURNAL, prepare_audio
from speechssl.data.manifest import read_manifest, validate_manifest

PCM16 = 1.0 / 32768.0  # one step of the 16-bit output


def _tone(rate: int, seconds: float, freq: float, amp: float, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float64)


@pytest.fixture()
def mixed(tmp_path):
    """8 kHz stereo 24-bit WAV, 44.1 kHz FLAC, 48 kHz mono float WAV, a 16 kHz file, 22.05 kHz OGG."""
    src = tmp_path / "src"
    (src / "deep" / "er").mkdir(parents=True)
    left, right = _tone(8000, 1.5, 300, 0.5), _tone(8000, 1.5, 700, 0.3, 1.0)
    soundfile.write(src / "stereo8k.wav", np.stack([left, right], axis=1), 8000, subtype="PCM_24")
    soundfile.write(src / "deep" / "cd44k.flac", _tone(44100, 1.2, 440, 0.6), 44100, subtype="PCM_16")
    soundfile.write(src / "deep" / "er" / "mono48k.WAV", _tone(48000, 0.7, 1000, 0.4), 48000, subtype="FLOAT")
    soundfile.write(src / "already16k.wav", _tone(16000, 0.5, 200, 0.2), 16000, subtype="PCM_16")
    soundfile.write(src / "v22k.ogg", _tone(22050, 0.8, 350, 0.3), 22050)
    (src / "notes.txt").write_text("not audio")
    return src


def _read(path):
    data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    return data, rate


def _expected(src_file, mono="mean"):
    """The reference: the source as soundfile decodes it (float32), reduced to mono, soxr HQ to 16 kHz."""
    data, rate = soundfile.read(str(src_file), dtype="float32", always_2d=True)
    x = data.mean(axis=1, dtype=np.float64).astype(np.float32) if mono == "mean" else data[:, 0 if mono == "left" else 1]
    return soxr.resample(x, rate, 16000, quality="HQ"), data, rate


def test_mixed_folder_to_16k_mono(mixed, tmp_path):
    dst = tmp_path / "dst"
    assert cli_main(["audio", "prepare", str(mixed), str(dst), "--valid-percent", "0.4", "--no-progress"]) == 0
    sources = {"stereo8k.wav": mixed / "stereo8k.wav", "deep/cd44k.wav": mixed / "deep" / "cd44k.flac",
               "deep/er/mono48k.wav": mixed / "deep" / "er" / "mono48k.WAV",
               "already16k.wav": mixed / "already16k.wav", "v22k.wav": mixed / "v22k.ogg"}
    for rel, src_file in sources.items():
        out, rate = _read(dst / rel)
        info = soundfile.info(str(dst / rel))
        assert (rate, out.shape[1], info.subtype) == (16000, 1, "PCM_16"), rel
        want, data, src_rate = _expected(src_file)
        # length in samples: S * 16000 / rate, rounded
        assert out.shape[0] == round(data.shape[0] * 16000 / src_rate) == want.shape[0], rel
        # content: the resampler's own output, to the 16-bit step
        np.testing.assert_allclose(out[:, 0], want, atol=PCM16 * 0.51 + 1e-7, err_msg=rel)
        # and an independent resampler agrees away from the edges (both band-limit at 8 kHz)
        mono = data.mean(axis=1, dtype=np.float64)
        g = np.gcd(16000, src_rate)
        ref = resample_poly(mono, 16000 // g, src_rate // g)[: out.shape[0]]
        edge = 400
        err = out[edge:-edge, 0] - ref[edge:-edge]
        snr = 10 * np.log10(np.mean(ref[edge:-edge] ** 2) / (np.mean(err ** 2) + 1e-20))
        assert snr > 45, (rel, snr)
    # the stereo file is the mean of its two channels
    left, right = _tone(8000, 1.5, 300, 0.5), _tone(8000, 1.5, 700, 0.3, 1.0)
    ref = resample_poly((left + right) / 2, 2, 1)
    np.testing.assert_allclose(_read(dst / "stereo8k.wav")[0][400:-400, 0], ref[400:-400], atol=3e-3)

    # manifests: exactly what `speechssl manifest DST --dest DST` writes for the same draw
    ref_dir = tmp_path / "ref"
    assert cli_main(["manifest", str(dst), "--dest", str(ref_dir), "--ext", "wav", "--valid-percent", "0.4",
                     "--no-progress"]) == 0
    rows = {}
    for split in ("train", "valid"):
        assert (dst / f"{split}.tsv").read_text() == (ref_dir / f"{split}.tsv").read_text()
        m = validate_manifest(dst / f"{split}.tsv")
        assert str(m.root) == os.path.realpath(dst)
        rows.update(zip(m.paths, m.sizes))
    assert rows == {rel: soundfile.info(str(dst / rel)).frames for rel in sources}
    assert not (dst / "notes.txt").exists()


@pytest.mark.parametrize("mono,channel", [("left", 0), ("right", 1)])
def test_mono_picks_a_channel(mixed, tmp_path, mono, channel):
    dst = tmp_path / mono
    prepare_audio(mixed, dst, mono=mono, ext="wav", valid_percent=0.0, progress=False)
    want, _, _ = _expected(mixed / "stereo8k.wav", mono)
    np.testing.assert_allclose(_read(dst / "stereo8k.wav")[0][:, 0], want, atol=PCM16 * 0.51 + 1e-7)
    assert read_manifest(dst / "train.tsv").paths == ["already16k.wav", "deep/er/mono48k.wav", "stereo8k.wav"]


def test_rerun_reuses_by_content_and_redoes_what_changed(mixed, tmp_path, speechssl_logs):
    dst = tmp_path / "dst"
    first = prepare_audio(mixed, dst, valid_percent=0.0, progress=False)
    assert (first.files, first.converted, first.reused, first.downmixed, first.resampled) == (5, 5, 0, 1, 4)
    mtimes = {p: p.stat().st_mtime_ns for p in dst.rglob("*.wav")}
    again = prepare_audio(mixed, dst, valid_percent=0.0, progress=False)
    assert (again.converted, again.reused) == (0, 5)
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*.wav")} == mtimes
    # new content under the same name is converted again, a removed source's output is removed
    soundfile.write(mixed / "already16k.wav", _tone(16000, 0.25, 900, 0.2), 16000, subtype="PCM_16")
    (mixed / "v22k.ogg").unlink()
    third = prepare_audio(mixed, dst, valid_percent=0.0, progress=False)
    assert (third.converted, third.reused, third.removed, third.files) == (1, 3, 1, 4)
    assert soundfile.info(str(dst / "already16k.wav")).frames == 4000
    assert not (dst / "v22k.wav").exists()
    assert "v22k.wav" not in (dst / "train.tsv").read_text()
    # other options redo everything, and say why
    speechssl_logs.clear()
    fourth = prepare_audio(mixed, dst, valid_percent=0.0, subtype="PCM_24", progress=False)
    assert fourth.converted == 4 and soundfile.info(str(dst / "stereo8k.wav")).subtype == "PCM_24"
    assert "other options (changed: subtype)" in speechssl_logs.text
    records = [json.loads(line) for line in (dst / JOURNAL).read_text().splitlines()]
    assert sorted(r["out"] for r in records) == ["already16k.wav", "deep/cd44k.wav", "deep/er/mono48k.wav",
                                                 "stereo8k.wav"]


def test_a_killed_run_resumes(mixed, tmp_path, monkeypatch):
    """A run that dies after two files keeps them (complete: atomic writes); the rerun does the rest."""
    from speechssl.commands import audio as audio_cmd

    dst = tmp_path / "dst"
    real, calls = audio_cmd._convert, []

    def dying(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(audio_cmd, "_convert", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare_audio(mixed, dst, valid_percent=0.0, progress=False)
    assert not (dst / "train.tsv").exists()
    monkeypatch.setattr(audio_cmd, "_convert", real)
    done = prepare_audio(mixed, dst, valid_percent=0.0, progress=False)
    assert (done.converted, done.reused) == (3, 2)
    assert len(read_manifest(dst / "train.tsv")) == 5


def test_unreadable_files_are_refused_by_name_before_any_work(mixed, tmp_path):
    (mixed / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00not audio")
    (mixed / "deep" / "junk.mp3").write_bytes(b"\x00" * 64)
    soundfile.write(mixed / "empty.wav", np.zeros((0,)), 16000)
    dst = tmp_path / "dst"
    with pytest.raises(ValueError, match=r"^3 files under SRC .*/src cannot be used: broken\.wav \(not a readable "
                                         r"audio file \(Format not recognised\)\); deep/junk\.mp3 \(.*\); "
                                         r"empty\.wav \(empty: 0 samples\); remove or re-encode them"):
        prepare_audio(mixed, dst, progress=False)
    assert not dst.exists()
    assert cli_main(["audio", "prepare", str(mixed), str(dst), "--no-progress"]) == 1


def test_collisions_and_foreign_files_are_refused(mixed, tmp_path):
    soundfile.write(mixed / "stereo8k.flac", _tone(8000, 0.2, 300, 0.1), 8000)
    with pytest.raises(ValueError, match=r"stereo8k\.flac and .*stereo8k\.wav -> stereo8k\.wav.*--ext"):
        prepare_audio(mixed, tmp_path / "a", progress=False)
    dst = tmp_path / "b"
    dst.mkdir()
    soundfile.write(dst / "mine.wav", _tone(16000, 0.2, 300, 0.1), 16000)
    with pytest.raises(ValueError, match=r"not written by `speechssl audio prepare`.*mine\.wav.*empty DST"):
        prepare_audio(mixed, dst, ext="flac", progress=False)
    with pytest.raises(ValueError, match="holds SRC"):
        prepare_audio(mixed, mixed, progress=False)
    with pytest.raises(FileNotFoundError, match=r"no \*\.aiff files .*--ext"):
        prepare_audio(mixed, tmp_path / "c", ext="aiff", progress=False)


def test_manifest_refusals_name_the_flag_that_fixes_them(mixed, tmp_path):
    from speechssl.corpus.importers import make_manifest

    with pytest.raises(ValueError, match=r"stereo8k\.wav: sample rate is 8000 Hz, expected 16000 Hz; convert the "
                                         r"folder with `speechssl audio prepare SRC DST --sample-rate 16000`.*"
                                         r"--sample-rate 8000"):
        make_manifest(mixed, tmp_path / "m", ext="wav", progress=False, path_must_contain="stereo")
    with pytest.raises(ValueError, match=r"stereo8k\.wav: has 2 channels, expected mono; .*"
                                         r"`speechssl audio prepare SRC DST --mono mean`"):
        make_manifest(mixed, tmp_path / "m", ext="wav", sample_rate=8000, progress=False, path_must_contain="stereo")
    for exc_text in (_message(make_manifest, mixed, tmp_path / "m", ext="flac", progress=False),):
        assert "resample=True" not in exc_text and "mono=" not in exc_text


def test_manifest_ext_default_is_every_common_audio_type(tmp_path):
    from speechssl.audio import readable_suffixes

    assert {".wav", ".flac", ".ogg", ".mp3"} <= set(readable_suffixes())
    for name in ("a.wav", "b.FLAC", "c.ogg", "d.mp3"):
        soundfile.write(tmp_path / name, _tone(16000, 0.3, 300, 0.2), 16000)
    assert cli_main(["manifest", str(tmp_path), "--dest", str(tmp_path / "m"), "--valid-percent", "0",
                     "--no-progress"]) == 0
    assert read_manifest(tmp_path / "m" / "train.tsv").paths == ["a.wav", "b.FLAC", "c.ogg", "d.mp3"]


def _message(fn, *args, **kwargs) -> str:
    try:
        fn(*args, **kwargs)
    except ValueError as exc:
        return str(exc)
    return ""


def test_progress_shows_done_of_total_and_eta(mixed, tmp_path, capsys):
    prepare_audio(mixed, tmp_path / "dst", valid_percent=0.0, progress=True)
    err = capsys.readouterr().err
    final = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("converting")][-1]
    # tqdm's "converting: 100%|...| 5/5 [elapsed<eta, rate]"
    assert re.search(r"converting: 100%.*\| 5/5 \[\d\d:\d\d<\d\d:\d\d", final), final
