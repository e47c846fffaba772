"""SpeechT5 fine-tuning through the decoder: ASR (CE falls, greedy decoding, WER/CER = jiwer's) and
the TTS smoke check (the mel L1 falls), the tasks' errors, and ``speechssl speecht5 asr|tts``."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from speechssl import cli, hub
from speechssl.data.example import write_example_audio
from speechssl.data.text import train_sentencepiece_lines
from speechssl.downstream.metrics import cer, wer
from speechssl.train.task import PretrainContext
from speechssl.upstream.speecht5.config import tiny
from speechssl.upstream.speecht5.finetune import (SpeechT5ASRTask, SpeechT5FinetuneConfig, SpeechT5TTSTask,
                                                  mel_l1, transcribe)
from speechssl.upstream.speecht5.model import SpeechT5Model

_WORDS = "THE CAT SAT ON A MAT DOG RAN HOME FAST RED BLUE".split()


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 + 4 short utterances with transcripts (``<split>.wrd``) and a sentencepiece model."""
    d = tmp_path_factory.mktemp("paired")
    sizes = write_example_audio(d, per_split=4, min_samples=6000, max_samples=9000, seed=3)
    g = torch.Generator().manual_seed(0)
    lines = []
    for split, n in sizes.items():
        rows = [" ".join(_WORDS[int(i)] for i in torch.randint(0, len(_WORDS), (4,), generator=g))
                for _ in n]
        (d / f"{split}.wrd").write_text("".join(r + "\n" for r in rows))
        lines += rows
    train_sentencepiece_lines(lines, d / "spm.model", 24, model_type="char", user_defined_symbols=["<mask>"])
    return d


def _model_cfg():
    return replace(tiny(), encoder_layers=1, decoder_layers=1, mask_prob=0.0, dropout=0.0, attention_dropout=0.0,
                   positional_dropout=0.0, speech_decoder_postnet_dropout=0.0, speech_decoder_prenet_dropout=0.0)


def _task(cls, paired: Path, spm: Path | None = None, **kw):
    cfg = SpeechT5FinetuneConfig(data=str(paired), spm_model=str(spm or paired / "spm.model"), **kw)
    return cls(cfg, PretrainContext(method="speecht5", model=_model_cfg(), seed=1))


def _train(task, model, batch, steps: int, lr: float) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        model.train()
        loss, size, _ = task.loss(model, batch)
        opt.zero_grad()
        (loss / size).backward()
        opt.step()
        losses.append(float(loss.detach()) / size)
    return losses


def test_asr_ce_falls_and_greedy_decoding_is_scored_as_jiwer(paired: Path) -> None:
    jiwer = pytest.importorskip("jiwer")
    torch.manual_seed(0)
    task = _task(SpeechT5ASRTask, paired, label_smoothing=0.0, mask=False)
    model = task.build_model()
    assert model.upstream.config.vocab_size == task.sp.get_piece_size() and model.upstream.config.pad_token_id == 3
    ds = task.dataset("train")
    batch = task.collate([ds[i] for i in range(len(ds))])
    assert batch["tokens"][0, int(batch["token_lengths"][0]) - 1] == 2  # eos closes each target
    # the loss is the summed token CE (an independent recomputation)
    loss, size, logs = task.loss(model, batch)
    assert size == float(batch["token_lengths"].sum())
    assert logs["nll"] == pytest.approx(float(loss.detach()), rel=1e-5)
    losses = _train(task, model, batch, 25, 3e-3)
    assert losses[-1] < 0.5 * losses[0], losses
    hyps, refs = transcribe(model.upstream, ds, task.sp, batch_size=3, max_length=12)
    assert refs == [r.strip() for r in (paired / "train.wrd").read_text().splitlines()]
    assert len(hyps) == len(refs) and all(isinstance(h, str) for h in hyps)
    # batched greedy decoding = one utterance at a time (padding changes nothing)
    assert transcribe(model.upstream, ds, task.sp, batch_size=1, max_length=12)[0] == hyps
    # speechssl's corpus-level WER/CER agree with jiwer's on these outputs (and on perfect ones)
    for h in (hyps, refs, [r[:-2] for r in refs]):
        assert wer(h, refs) == pytest.approx(jiwer.wer(refs, h))
        assert cer(h, refs) == pytest.approx(jiwer.cer(refs, h))


def test_tts_mel_l1_falls(paired: Path) -> None:
    torch.manual_seed(0)
    task = _task(SpeechT5TTSTask, paired)
    model = task.build_model()
    ds = task.dataset("train")
    batch = task.collate([ds[i] for i in range(len(ds))])
    assert batch["mels"].shape[-1] == 40 and batch["mels"].shape[0] == len(ds)

    def l1() -> float:
        model.eval()
        with torch.no_grad():
            return float(mel_l1(model(batch), batch["mels"]).mean())

    before = l1()
    losses = _train(task, model, batch, 15, 3e-3)
    after = l1()
    assert after < 0.7 * before, (before, after)
    assert losses[-1] < losses[0]
    # mel_l1 against a hand computation on one utterance
    with torch.no_grad():
        model.eval()
        out = model(batch)
        n = int(out["mel_lengths"][0])
        ref = ((out["mel_before"][0, :n] - batch["mels"][0, :n]).abs().mean()
               + (out["mel_after"][0, :n] - batch["mels"][0, :n]).abs().mean())
        assert float(mel_l1(out, batch["mels"])[0]) == pytest.approx(float(ref), rel=1e-5)
    mel = model.upstream.generate_speech(batch["tokens"][:1], batch["token_lengths"][:1], max_steps=5)
    assert mel[0].shape[1] == 40 and 0 < mel[0].shape[0] <= 10


def test_task_errors(paired: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task.spm_model is not set"):
        SpeechT5ASRTask(SpeechT5FinetuneConfig(data=str(paired)), PretrainContext("speecht5", _model_cfg()))
    with pytest.raises(FileNotFoundError, match="task.data: no such directory"):
        _task(SpeechT5ASRTask, tmp_path / "nope")
    # an init model with another vocabulary is refused with both settings named
    other = SpeechT5Model.from_config(replace(_model_cfg(), vocab_size=30))
    hub.save(other, tmp_path / "other")
    with pytest.raises(ValueError, match="was trained with text settings .*vocab_size': 30"):
        _task(SpeechT5ASRTask, paired, init=str(tmp_path / "other")).build_model()
    bad = tmp_path / "bad"
    write_example_audio(bad, splits=("train",), per_split=2, seed=1)
    (bad / "train.wrd").write_text("HELLO\n")  # one row for two utterances
    with pytest.raises(Exception, match="train.wrd"):
        _task(SpeechT5ASRTask, bad, paired / "spm.model").dataset("train")
    (bad / "train.wrd").write_text("HELLO\n\n")
    with pytest.raises(Exception, match=r"train\.wrd:2: empty transcript"):
        _task(SpeechT5ASRTask, bad, paired / "spm.model").dataset("train")


def test_cli_asr_and_tts_write_results(paired: Path, tmp_path: Path) -> None:
    fast = ["trainer.max_updates=3", "trainer.schedule.warmup_updates=1", "trainer.validate_every_updates=3",
            "trainer.log_every_updates=1", "trainer.tensorboard=false", "model.encoder_layers=1",
            "model.decoder_layers=1"]
    common = ["--data", str(paired), "--spm-model", str(paired / "spm.model"), "--eval-split", "valid"]
    assert cli.main(["speecht5", "asr", *common, "--exp-dir", str(tmp_path / "asr"), *fast]) == 0
    res = json.loads((tmp_path / "asr" / "result.json").read_text())
    assert res["task"] == "asr" and res["utterances"] == 4 and res["wer"] >= 0 and res["cer"] >= 0
    assert len(res["examples"]) == 4
    # fine-tune from that run's checkpoint: the init is loaded (same vocabulary)
    assert cli.main(["speecht5", "tts", *common, "--init", str(tmp_path / "asr" / "checkpoint_last.pt"),
                     "--exp-dir", str(tmp_path / "tts"), *fast[:-2], "trainer.optim.lr=3e-3"]) == 0
    res = json.loads((tmp_path / "tts" / "result.json").read_text())
    assert res["after"]["mel_l1"] < res["before"]["mel_l1"]
    assert res["generated_frames"] > 0
    assert cli.main(["speecht5", "asr", "--data", str(tmp_path / "nope"), "--spm-model", "x",
                     "--exp-dir", str(tmp_path / "e")]) == 1


def test_pretraining_checkpoint_loads_through_the_hub_and_initialises_finetuning(tmp_path: Path) -> None:
    """speechssl pretrain's checkpoint records the upstream: hub.load / hub convert read it whole
    (decoder and pre/post-nets included), and the ASR task starts from exactly those weights."""
    from speechssl.upstream.speecht5.example import write_example

    data = tmp_path / "data"
    task_cfg = write_example(data)
    exp = tmp_path / "exp"
    assert cli.main(["pretrain", "--method", "speecht5", "--preset", "tiny", "--data", str(data), "--exp-dir", str(exp),
                     f"task.max_sample_size={task_cfg.max_sample_size}", "task.pad_audio=true",
                     f"task.text_max_tokens={task_cfg.text_max_tokens}", "trainer.max_updates=2",
                     "trainer.max_tokens=32000", "trainer.tensorboard=false", "trainer.schedule.warmup_updates=0",
                     "trainer.schedule.name=constant"]) == 0
    up = hub.load(exp / "checkpoint_last.pt")
    assert isinstance(up, SpeechT5Model) and up.decoder is not None and up.speech_decoder_postnet is not None
    ckpt = torch.load(exp / "checkpoint_last.pt", weights_only=True, map_location="cpu")
    trained = {k[len("upstream."):]: v for k, v in ckpt["model"].items() if k.startswith("upstream.")}
    assert set(trained) == set(up.state_dict())
    assert all(torch.equal(up.state_dict()[k], v) for k, v in trained.items())
    assert cli.main(["hub", "convert", str(exp / "checkpoint_last.pt"), str(tmp_path / "model")]) == 0
    cfg = SpeechT5FinetuneConfig(data=str(data), spm_model=str(data / "spm.model"), init=str(tmp_path / "model"))
    # the example has no transcripts; the model is all this needs
    model = SpeechT5ASRTask(cfg, PretrainContext("speecht5", tiny(), 1)).build_model()
    assert all(torch.equal(model.upstream.state_dict()[k], v) for k, v in trained.items())
    assert model.upstream.config.feature_grad_mult == 0.0  # fine-tuning freezes the conv extractor
