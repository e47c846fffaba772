"""Benchmark batched torch fbank against kaldi-native-fbank and librosa on the same audio.

    python tools/bench/features.py [--quick] [--threads N] [--device cpu|cuda] [--repeats R]

The audio is synthesized deterministically: 60 utterances of 10 s (10 minutes; ``--quick``:
12 utterances, 2 minutes) of harmonic tones with gliding pitch, a syllabic envelope and noise,
at 16 kHz. Each extractor computes 80-bin log mel features, 25 ms windows every 10 ms:

- ``torch``: ``speechssl.features.fbank`` on the whole padded batch ``(B, S)`` at once;
- ``knf``: kaldi-native-fbank's ``OnlineFbank``, one utterance after another, frames gathered
  into a numpy array (it is single-threaded C++);
- ``librosa``: ``librosa.feature.melspectrogram`` on the ``(B, S)`` batch (n_fft 512, window
  400, hop 160, power 2, no centring) followed by a floored log.

Timing: one warm-up run, then the best of ``--repeats`` runs, in wall-clock seconds (``*_s``)
and in CPU seconds of this process (``*_cpu_s``, steadier on a shared machine).
``--threads`` (default ``1,2``) lists the thread counts at which torch and librosa (its
BLAS, through threadpoolctl) run, interleaved run by run; kaldi-native-fbank is
single-threaded C++ and runs once. Prints ONE JSON line; ``threads.<N>`` holds
``ratio_vs_knf`` (knf time / torch time) and ``ratio_vs_librosa`` (librosa time / torch
time; above 1: torch is faster) at N threads; ``ratio`` repeats the first thread count's.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

SAMPLE_RATE = 16000
UTTERANCE_S = 10


def synthesize(num_utts: int, seed: int = 0) -> np.ndarray:
    """``(num_utts, 10 s)`` float32 speech-like audio in [-1, 1], deterministic."""
    rng = np.random.default_rng(seed)
    n = SAMPLE_RATE * UTTERANCE_S
    t = np.arange(n) / SAMPLE_RATE
    out = np.empty((num_utts, n), dtype=np.float32)
    for i in range(num_utts):
        f0 = 110 + 60 * rng.random() + 30 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        harmonics = sum(np.sin(k * phase) / k for k in range(1, 16))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
        wav = harmonics * envelope + 0.05 * rng.standard_normal(n)
        out[i] = 0.5 * wav / np.abs(wav).max()
    return out


def _best(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall-clock and best CPU (process) seconds over ``repeats`` runs, after a warm-up."""
    result = fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 minutes of audio instead of 10")
    parser.add_argument("--threads", default="1,2",
                        help="comma-separated thread counts for torch and librosa's BLAS (default 1,2)")
    parser.add_argument("--device", default="cpu", help="device of the torch fbank")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per extractor (best of)")
    args = parser.parse_args()

    import kaldi_native_fbank as knf
    import librosa
    import torch

    from speechssl.features import fbank

    from threadpoolctl import threadpool_limits

    thread_counts = [int(t) for t in str(args.threads).split(",") if t]
    audio = synthesize(12 if args.quick else 60)
    num_utts, num_samples = audio.shape

    device = torch.device(args.device)
    batch = torch.from_numpy(audio).to(device)
    lengths = torch.full((num_utts,), num_samples, device=device)

    def run_torch():
        feats, out_lengths = fbank(batch, lengths=lengths)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return feats

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 80

    def run_knf():
        feats = []
        for wav in audio:
            comp = knf.OnlineFbank(opts)
            comp.accept_waveform(SAMPLE_RATE, wav)
            comp.input_finished()
            feats.append(np.stack([comp.get_frame(i) for i in range(comp.num_frames_ready)]))
        return np.stack(feats)

    def run_librosa():
        mel = librosa.feature.melspectrogram(y=audio, sr=SAMPLE_RATE, n_fft=512, win_length=400, hop_length=160,
                                             center=False, power=2.0, n_mels=80, fmin=20.0)
        return np.log(np.maximum(mel, np.finfo(np.float32).eps))

    knf_s, knf_cpu_s, knf_feats = _best(run_knf, args.repeats)  # single-threaded C++
    per_threads = {}
    torch_feats = None
    for threads in thread_counts:
        torch.set_num_threads(threads)
        with threadpool_limits(threads):
            # interleaved: torch, librosa, torch, librosa, ... (best of each)
            t_runs, l_runs = [], []
            for _ in range(args.repeats):
                t_runs.append(_best(run_torch, 1))
                l_runs.append(_best(run_librosa, 1))
        torch_s, torch_cpu_s, torch_feats = min(r[0] for r in t_runs), min(r[1] for r in t_runs), t_runs[-1][2]
        librosa_s, librosa_cpu_s = min(r[0] for r in l_runs), min(r[1] for r in l_runs)
        per_threads[str(threads)] = {
            "ratio_vs_knf": round(knf_s / torch_s, 3),
            "ratio_vs_librosa": round(librosa_s / torch_s, 3),
            "ratio_vs_librosa_cpu": round(librosa_cpu_s / torch_cpu_s, 3),
            "torch_s": round(torch_s, 4), "torch_cpu_s": round(torch_cpu_s, 4),
            "librosa_s": round(librosa_s, 4), "librosa_cpu_s": round(librosa_cpu_s, 4),
            "torch_x_realtime": round(num_utts * UTTERANCE_S / torch_s, 1),
        }
    librosa_feats = run_librosa()
    first = per_threads[str(thread_counts[0])]

    frames = int(knf_feats.shape[0] * knf_feats.shape[1])
    assert torch_feats.shape == knf_feats.shape, (tuple(torch_feats.shape), knf_feats.shape)
    max_diff = float(np.abs(torch_feats.cpu().numpy() - knf_feats).max())
    result = {
        "bench": "features_fbank",
        "baseline": "kaldi_native_fbank",
        "ratio": first["ratio_vs_knf"],
        "ratio_is": "knf seconds / torch seconds for the same audio (above 1: torch faster), at the first thread count",
        "ratio_vs_librosa": first["ratio_vs_librosa"],
        "threads": per_threads,
        "audio_s": num_utts * UTTERANCE_S,
        "utterances": num_utts,
        "frames": frames,
        "knf_s": round(knf_s, 4),
        "knf_cpu_s": round(knf_cpu_s, 4),
        "knf_frames_per_s": round(frames / knf_s),
        "max_abs_diff_torch_vs_knf": round(max_diff, 6),
        "librosa_frames": int(librosa_feats.shape[0] * librosa_feats.shape[-1]),
        "device": str(device),
        "quick": args.quick,
        "torch": torch.__version__,
        "knf": getattr(knf, "__version__", "unknown"),
        "librosa": librosa.__version__,
        "machine": platform.machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
