"""SpeechT5 fine-tuning through the decoder: speech → text (ASR) and text → log-mel (TTS).

Both tasks train the whole :class:`~speechssl.upstream.speecht5.model.SpeechT5Model` (from a
pretrained checkpoint or model directory, ``task.init``, or freshly initialised from the preset)
on paired data, with the shared Trainer (``speechssl speecht5 asr|tts``):

* :class:`SpeechT5ASRTask` (fairseq ``speecht5`` ``s2t`` fine-tuning without its CTC branch):
  waveform → speech encoder pre-net + shared encoder (optionally time-masked, the model's
  ``mask_*`` settings) → text decoder pre-net + decoder with cross-attention → text post-net.
  Teacher forcing with :func:`~speechssl.upstream.speecht5.model.shift_tokens_right`;
  loss = label-smoothed cross-entropy summed over target tokens (``eos`` included),
  ``sample_size`` = target tokens. :func:`transcribe` decodes greedily.
* :class:`SpeechT5TTSTask` (``t2s``): tokens → text encoder pre-net + shared encoder → speech
  decoder pre-net + decoder → speech post-net; targets are the Kaldi log-mel frames
  (``num_mel_bins``, 25/10 ms) of the utterance; loss per utterance = L1(mel before) + L1(mel
  after) (means over valid frames × bins) + BCE(stop, ``pos_weight``) — the pretraining task's
  reconstruction loss — summed over the batch, ``sample_size`` = utterances.

Data (``task.data``): ``<split>.tsv`` and ``<split>.<text_label>`` (one transcript per row,
``.wrd`` by default, the corpus's ``read/`` split), tokenised by ``task.spm_model`` (``eos``
appended). Utterances are never cropped (a crop would cut the transcript).
"""
from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.nn import functional as F

from speechssl.data.base import SizedDataset
from speechssl.data.dataset import AudioDataset, split_manifest
from speechssl.data.manifest import FormatError, read_labels, validate_manifest
from speechssl.data.text import load_sentencepiece
from speechssl.features.kaldi import fbank
from speechssl.nn.lengths import pad_list, padding_mask
from speechssl.train.config import OptimConfig, ScheduleConfig, TrainerConfig
from speechssl.train.task import PretrainContext, Task
from speechssl.upstream.speecht5.config import SpeechT5Config
from speechssl.upstream.speecht5.model import SpeechT5Model, shift_tokens_right, speech_decoder_inputs

__all__ = ["SpeechT5FinetuneConfig", "SpeechT5Seq2Seq", "SpeechTextDataset", "SpeechT5ASRTask",
           "SpeechT5TTSTask", "transcribe", "mel_l1"]

_log = logging.getLogger(__name__)


@dataclass
class SpeechT5FinetuneConfig:
    """Paired speech/text data and the fine-tuning losses (ASR and TTS)."""

    data: str = ""  # directory with <split>.tsv and <split>.<text_label> (set by --data)
    text_label: str = "wrd"  # transcript extension, one line per manifest row
    spm_model: str = ""  # sentencepiece .model (speechssl text spm-train); must be the init model's vocabulary
    init: str = ""  # pretrained SpeechT5 (training checkpoint, model directory, zoo name); "": the preset, random
    sample_rate: int = 16000  # other rates are errors
    min_sample_size: int = 0  # drop shorter utterances
    max_target_tokens: int = 512  # a longer transcript is an error naming the row
    seed: int = 1  # item seeds (no crops; kept for the data layer's per-item generators)
    mask: bool = True  # ASR: time-mask the encoder input with the model's mask_prob / mask_length
    # ASR: gradient scale into the conv feature extractor (fairseq's fine-tuning: 0, the extractor
    # stays as pretrained; its backward is also most of a CPU step); None: the model's own setting
    feature_grad_mult: Optional[float] = 0.0
    label_smoothing: float = 0.1  # ASR: cross-entropy label smoothing (fairseq speecht5 s2t: 0.1)
    mel_weight: float = 1.0  # TTS: weight of the L1 terms
    stop_pos_weight: float = 5.0  # TTS: BCE pos_weight of the stop token
    stop_weight: float = 1.0  # TTS: weight of the stop BCE


class SpeechT5Seq2Seq(nn.Module):
    """The trained module: a :class:`SpeechT5Model` (``upstream``) run in one direction per call.

    ``forward(batch)`` is ASR for a batch with ``"wav"`` and TTS for one with ``"mels"`` (see
    the tasks), so the Trainer (and DDP) call the module itself.
    """

    def __init__(self, upstream: SpeechT5Model, *, mask: bool = False) -> None:
        super().__init__()
        self.upstream = upstream
        self.mask = mask

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        up, cfg = self.upstream, self.upstream.config
        tokens, tok_len = batch["tokens"], batch["token_lengths"]
        if "mels" in batch:  # TTS: text encoder → speech decoder
            memory = up.encode_text(tokens, tok_len)[-1]
            dec_in, steps = speech_decoder_inputs(batch["mels"], batch["mel_lengths"], cfg.reduction_factor)
            before, after, stop = up.decode_speech(dec_in, steps, memory, tok_len)
            return {"mel_before": before, "mel_after": after, "stop_logits": stop,
                    "mel_lengths": steps * cfg.reduction_factor}
        feats = up.extract_features(batch["wav"], batch["lengths"], mask=self.mask and self.training)
        dec_in = shift_tokens_right(tokens, tok_len, cfg.decoder_start_token_id, cfg.pad_token_id)
        return {"logits": up.decode_text(dec_in, tok_len, feats.hidden_states[-1], feats.lengths)}


class SpeechTextDataset(SizedDataset):
    """Utterances of a manifest with their tokenised transcripts (never cropped).

    Items: the :class:`~speechssl.data.dataset.AudioDataset` item plus ``"tokens"`` ``(L,)`` int64
    (the transcript's pieces, then ``eos``) and ``"text"`` (the transcript). ``sizes`` are samples.

    Raises:
        FormatError: a transcript file whose rows do not match the manifest, an empty
            transcript or one longer than ``max_target_tokens`` (naming file and line).
    """

    def __init__(self, manifest: Path, transcripts: Path, sp: Any, *, max_target_tokens: int = 512,
                 min_sample_size: int = 0, seed: int = 1, sample_rate: int = 16000) -> None:
        self.audio = AudioDataset(validate_manifest(manifest, sample_rate=sample_rate), min_sample_size=min_sample_size,
                                  crop="start", seed=seed, sample_rate=sample_rate)
        rows = read_labels(transcripts, expected_rows=len(self.audio.manifest.sizes))
        self.sizes = self.audio.sizes
        self.texts: list[str] = []
        self.tokens: list[torch.Tensor] = []
        eos = int(sp.eos_id())
        for row in self.audio.rows:
            text = " ".join(rows[int(row)].split())
            if not text:
                raise FormatError(f"{transcripts}:{int(row) + 1}: empty transcript (every utterance needs one)")
            ids = list(sp.encode(text, out_type=int)) + [eos]
            if len(ids) > max_target_tokens:
                raise FormatError(f"{transcripts}:{int(row) + 1}: {len(ids)} tokens, more than "
                                  f"task.max_target_tokens={max_target_tokens}")
            self.texts.append(text)
            self.tokens.append(torch.tensor(ids, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.audio)

    def set_epoch(self, epoch: int) -> None:
        self.audio.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.audio[index]
        item["tokens"], item["text"] = self.tokens[index], self.texts[index]
        return item


class _FinetuneTask(Task):
    """What ASR and TTS share: the sentencepiece model, the upstream, the paired data."""

    method = "speecht5"

    def __init__(self, task_cfg: SpeechT5FinetuneConfig, ctx: PretrainContext) -> None:
        if not isinstance(ctx.model, SpeechT5Config):
            raise TypeError(f"expected a SpeechT5Config for the model, got {type(ctx.model).__name__}")
        if not task_cfg.data:
            raise ValueError("task.data is not set (give --data DIR with <split>.tsv and transcripts)")
        if not task_cfg.spm_model:
            raise ValueError("task.spm_model is not set (train one with speechssl text spm-train)")
        if not 0.0 <= task_cfg.label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1), got {task_cfg.label_smoothing}")
        self.cfg = task_cfg
        self.data_dir = Path(task_cfg.data)
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"task.data: no such directory: {self.data_dir}")
        self.sp = load_sentencepiece(task_cfg.spm_model)
        ids = {"pad_token_id": int(self.sp.pad_id()), "eos_token_id": int(self.sp.eos_id()),
               "bos_token_id": int(self.sp.bos_id())}
        if min(ids.values()) < 0:
            raise ValueError(f"{task_cfg.spm_model}: needs pad, bos and eos pieces, got ids {ids}")
        self.vocab = dict(vocab_size=int(self.sp.get_piece_size()), decoder_start_token_id=ids["eos_token_id"],
                          position_offset=ids["pad_token_id"] + 1, **ids)
        self.model_cfg = replace(ctx.model, **self.vocab)
        self.model_cfg.validate()
        self.seed = ctx.seed

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """A short CPU fine-tuning run for ``tiny`` (Adam 5e-4, 40 warm-up updates), else the defaults."""
        if preset == "tiny":
            return TrainerConfig(max_updates=400, max_tokens=160_000, optim=OptimConfig(lr=5e-4),
                                 schedule=ScheduleConfig(name="linear", warmup_updates=40),
                                 save_every_updates=200, validate_every_updates=100, log_every_updates=20)
        return None

    def build_model(self) -> SpeechT5Seq2Seq:
        if self.cfg.init:
            from speechssl import hub

            upstream = hub.load(self.cfg.init)
            if not isinstance(upstream, SpeechT5Model):
                raise ValueError(f"task.init: {self.cfg.init} holds a {type(upstream).__name__}, not a SpeechT5 model")
            have = {k: getattr(upstream.config, k) for k in self.vocab}
            if have != self.vocab:
                raise ValueError(f"task.init: {self.cfg.init} was trained with text settings {have}, but "
                                 f"task.spm_model={self.cfg.spm_model} gives {self.vocab}; use the pretraining "
                                 "run's sentencepiece model")
            _log.info("fine-tuning from %s", self.cfg.init)
        else:
            upstream = SpeechT5Model.from_config(self.model_cfg)
            _log.info("fine-tuning a randomly initialised SpeechT5 (task.init is empty)")
        self._require_parts(upstream.config)
        if self.cfg.feature_grad_mult is not None and self.cfg.feature_grad_mult != upstream.config.feature_grad_mult:
            upstream.config = replace(upstream.config, feature_grad_mult=float(self.cfg.feature_grad_mult))
            upstream.config.validate()
        self.model_cfg = upstream.config
        upstream.train()
        return SpeechT5Seq2Seq(upstream, mask=self.cfg.mask)

    @abc.abstractmethod
    def _require_parts(self, cfg: SpeechT5Config) -> None:
        """Raise ValueError when ``cfg`` lacks a part this direction needs."""

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.upstream

    def upstream_config(self) -> Any:
        return self.model_cfg

    def dataset(self, split: str) -> SpeechTextDataset:
        c = self.cfg
        return SpeechTextDataset(split_manifest(self.data_dir, split), self.data_dir / f"{split}.{c.text_label}",
                                 self.sp, max_target_tokens=c.max_target_tokens, min_sample_size=c.min_sample_size,
                                 seed=c.seed, sample_rate=c.sample_rate)

    def _collate_audio_text(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty list of items")
        wav, lengths = pad_list([it["wav"] for it in items], 0.0)
        tokens, tok_len = pad_list([it["tokens"] for it in items], int(self.sp.pad_id()))
        return {"id": [it["id"] for it in items], "index": torch.tensor([it["index"] for it in items]),
                "wav": wav.float(), "lengths": lengths, "tokens": tokens.long(), "token_lengths": tok_len,
                "text": [it["text"] for it in items]}


class SpeechT5ASRTask(_FinetuneTask):
    """Speech → text through the encoder-decoder (see the module docstring)."""

    def _require_parts(self, cfg: SpeechT5Config) -> None:
        if not cfg.text_decoder:
            raise ValueError("ASR fine-tuning needs the text decoder (model.text_decoder=true)")

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self._collate_audio_text(items)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        logits = model(batch)["logits"]
        tokens = batch["tokens"]
        valid = ~padding_mask(batch["token_lengths"], tokens.shape[1])
        flat, target = logits[valid].float(), tokens[valid]
        loss = F.cross_entropy(flat, target, label_smoothing=self.cfg.label_smoothing, reduction="sum")
        nll = F.cross_entropy(flat.detach(), target, reduction="sum")
        correct = (flat.detach().argmax(-1) == target).sum()
        return loss, float(target.numel()), {"nll": float(nll), "accuracy": float(correct)}


def mel_l1(out: dict[str, torch.Tensor], mels: torch.Tensor) -> torch.Tensor:
    """Per-utterance L1 of the mel before + after the post-net: ``(B,)``, means over valid frames × bins.

    Args:
        out: the TTS forward (``mel_before``/``mel_after`` ``(B, T', M)``, ``mel_lengths`` ``(B,)``).
        mels: ``(B, T, M)`` targets (``T >= T'``).
    """
    before, after = out["mel_before"], out["mel_after"]
    T = before.shape[1]
    valid = (~padding_mask(out["mel_lengths"], T)).to(before.dtype)  # (B, T')
    target = mels[:, :T]
    frames = valid.sum(1).clamp(min=1)
    err = ((before - target).abs().mean(-1) + (after - target).abs().mean(-1)) * valid
    return err.sum(1) / frames


class SpeechT5TTSTask(_FinetuneTask):
    """Text → log-mel through the encoder-decoder (see the module docstring)."""

    def _require_parts(self, cfg: SpeechT5Config) -> None:
        if not (cfg.text_encoder and cfg.speech_decoder):
            raise ValueError("TTS fine-tuning needs the text encoder and the speech decoder "
                             "(model.text_encoder=true model.speech_decoder=true)")
        if cfg.speaker_embedding_dim:
            raise ValueError("this TTS task feeds no speaker embedding; use model.speaker_embedding_dim=0")

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._collate_audio_text(items)
        mels, mel_lengths = fbank(batch["wav"], self.cfg.sample_rate, num_mel_bins=self.model_cfg.num_mel_bins,
                                  lengths=batch["lengths"])
        batch["mels"], batch["mel_lengths"] = mels.float(), mel_lengths
        return batch

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        out = model(batch)
        c = self.cfg
        l1 = mel_l1(out, batch["mels"])  # (B,)
        stop = out["stop_logits"]
        B, T = stop.shape
        valid = ~padding_mask(out["mel_lengths"], T)
        labels = torch.zeros_like(stop)
        labels[torch.arange(B), (out["mel_lengths"] - 1).clamp(min=0)] = 1.0
        bce = F.binary_cross_entropy_with_logits(stop, labels, reduction="none",
                                                 pos_weight=torch.tensor(c.stop_pos_weight, device=stop.device))
        bce = (bce * valid).sum(1) / valid.sum(1).clamp(min=1)  # (B,)
        loss = (c.mel_weight * l1 + c.stop_weight * bce).sum()
        return loss, float(B), {"mel_l1": float(l1.detach().sum()), "stop_bce": float(bce.detach().sum())}


@torch.no_grad()
def transcribe(model: SpeechT5Model, dataset: SpeechTextDataset, sp: Any, *, batch_size: int = 8,
               max_length: Optional[int] = None) -> tuple[list[str], list[str]]:
    """Greedy speech → text over ``dataset``: (hypotheses, references), in dataset order.

    ``max_length``: decoder steps per utterance (None: twice the longest reference's tokens + 10).
    """
    model.eval()
    limit = max_length or 2 * max(len(t) for t in dataset.tokens) + 10
    device = next(model.parameters()).device
    hyps: list[str] = []
    for start in range(0, len(dataset), batch_size):
        wavs = [dataset[i]["wav"].to(device) for i in range(start, min(start + batch_size, len(dataset)))]
        hyps += [sp.decode(ids) for ids in model.generate_text(wavs, max_length=limit)]
    return hyps, list(dataset.texts)
