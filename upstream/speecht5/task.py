"""SpeechT5 joint speech + text pretraining (fairseq ``speecht5`` ``speech_pretrain``/``text_pretrain``).

Data: a :class:`speechssl.data.multisource.MultiSourceDataset` of two sources, batches drawn
from one source at a time in the configured proportion (the Trainer picks
:class:`~speechssl.data.multisource.MultiSourceBatchSampler`):

* ``speech``: ``<data>/<split>.tsv`` + ``<label_dir>/<split>.km`` (HuBERT's layout, reused from
  the HuBERT recipe); the collater adds Kaldi log-mel targets (``num_mel_bins``, 25/10 ms) of the
  cropped waveforms;
* ``text``: ``<text_dir>/<split>.txt`` (one sentence per line) through the sentencepiece model
  ``spm_model`` (which must hold the ``mask_token`` piece), BART-corrupted per item
  (:mod:`speechssl.upstream.speecht5.denoise`).

Loss per batch (summed; ``sample_size`` = masked frames for speech, target tokens for text)::

    speech:  pred_masked_weight · Σ CE(masked frames)              (HuBERT, + unmasked if weighted)
           + sample_size · ( feature_pen_weight · mean(conv features²)
                             + mel_weight · (L1(mel before) + L1(mel after) + BCE(stop, pos_weight))
                             + diversity_weight · diversity )
    text:    text_weight · Σ CE(target tokens) + sample_size · diversity_weight · diversity

The official recipe's weights are the defaults: speech masked 1, feature penalty 10, diversity
0.1 (mel and text 1, stop-token ``pos_weight`` 5). L1 terms are means over valid frames × bins,
the BCE a mean over valid frames; the stop label is 1 on each utterance's last predicted frame.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.nn import functional as F

from speechssl.data.multisource import MultiSourceCollater, MultiSourceDataset
from speechssl.data.text import TextDataset
from speechssl.features.kaldi import fbank
from speechssl.nn.lengths import padding_mask
from speechssl.nn.losses import masked_prediction_loss
from speechssl.train.presets import cpu_tiny, fairseq_pretraining
from speechssl.train.task import PretrainContext
from speechssl.train.unit_task import UnitPredictionTask, UnitTaskConfig
from speechssl.upstream.speecht5.config import SpeechT5Config
from speechssl.upstream.speecht5.denoise import DenoisingCollater, DenoisingTextDataset
from speechssl.upstream.speecht5.pretrain import SpeechT5PretrainModel

__all__ = ["SpeechT5TaskConfig", "SpeechT5PretrainTask"]

_log = logging.getLogger(__name__)


@dataclass
class SpeechT5TaskConfig(UnitTaskConfig):
    """HuBERT's data and loss settings (speech) plus the text source and SpeechT5's extra losses."""

    text_dir: Optional[str] = None  # directory with <split>.txt; None: data
    spm_model: str = ""  # sentencepiece .model (unk 0, bos 1, eos 2, pad 3, with mask_token); "": <text_dir>/spm.model
    mask_token: str = "<mask>"  # the piece BART's spans become
    text_max_tokens: int = 4096  # max tokens per text batch
    max_text_tokens_per_item: Optional[int] = 256  # crop longer sentences
    speech_proportion: float = 1.0  # batches of each source per epoch, relative to its size
    text_proportion: float = 1.0
    text_mask_ratio: float = 0.3  # BART mask
    text_poisson_lambda: float = 3.5  # BART span lengths
    text_random_ratio: float = 0.1  # BART mask_random
    mel_weight: float = 1.0  # speech reconstruction (L1 + stop BCE)
    stop_pos_weight: float = 5.0  # BCE pos_weight of the stop token
    text_weight: float = 1.0  # text reconstruction CE
    diversity_weight: float = 0.1  # quantizer diversity loss


class SpeechT5PretrainTask(UnitPredictionTask):
    """Joint speech + text pretraining of :class:`SpeechT5PretrainModel` (see the module docstring)."""

    method = "speecht5"  # checkpoints record the upstream, so hub.load and hub convert read them
    model_cls = SpeechT5PretrainModel
    model_config_cls = SpeechT5Config

    def __init__(self, task_cfg: SpeechT5TaskConfig, ctx: PretrainContext) -> None:
        import sentencepiece as spm

        super().__init__(task_cfg, ctx)
        self.text_dir = Path(task_cfg.text_dir) if task_cfg.text_dir else self.data_dir
        spm_path = Path(task_cfg.spm_model) if task_cfg.spm_model else self.text_dir / "spm.model"
        if not spm_path.is_file():
            raise FileNotFoundError(f"task.spm_model: no such file: {spm_path} (train one with "
                                    "speechssl.data.text.train_sentencepiece, user_defined_symbols=['<mask>'])")
        self.sp = spm.SentencePieceProcessor(model_file=str(spm_path))
        self.mask_id = int(self.sp.piece_to_id(task_cfg.mask_token))
        if self.sp.id_to_piece(self.mask_id) != task_cfg.mask_token:
            raise ValueError(f"{spm_path}: no piece {task_cfg.mask_token!r} (task.mask_token); train the model "
                             "with user_defined_symbols=[mask_token]")
        vocab = int(self.sp.get_piece_size())
        ids = {"pad_token_id": int(self.sp.pad_id()), "eos_token_id": int(self.sp.eos_id()),
               "bos_token_id": int(self.sp.bos_id())}
        if min(ids.values()) < 0:
            raise ValueError(f"{spm_path}: needs pad, bos and eos pieces, got ids {ids}")
        wanted = dict(vocab_size=vocab, decoder_start_token_id=ids["eos_token_id"],
                      position_offset=ids["pad_token_id"] + 1, **ids)
        if any(getattr(self.model_cfg, k) != v for k, v in wanted.items()):
            _log.info("model text settings set from %s: %s", spm_path, wanted)
            self.model_cfg = replace(self.model_cfg, **wanted)
            self.model_cfg.validate()
        self._text_collater = DenoisingCollater(ids["pad_token_id"])
        self._sources = MultiSourceCollater({"speech": self._speech_collate, "text": self._text_collater})

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """HuBERT's trainer settings for the same preset sizes."""
        if preset == "tiny":
            return cpu_tiny()
        if preset == "base":
            return fairseq_pretraining(lr=2e-4, warmup_updates=64_000, max_tokens=1_400_000, max_updates=500_000,
                                       log_every_updates=200)
        return None

    # --- data -----------------------------------------------------------------------------------

    def dataset(self, split: str) -> MultiSourceDataset:
        speech = super().dataset(split)
        path = self.text_dir / f"{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"text not found: {path} (split {split!r} of task.text_dir)")
        c = self.cfg
        train = split == "train"
        clean = TextDataset(path, self.sp, max_tokens_per_item=c.max_text_tokens_per_item,
                            crop="random" if train else "start", add_eos=True, seed=c.seed)
        text = DenoisingTextDataset(clean, mask_id=self.mask_id, ratio=c.text_mask_ratio,
                                    poisson_lambda=c.text_poisson_lambda, random_ratio=c.text_random_ratio,
                                    vocab_size=self.model_cfg.vocab_size, eos_id=self.model_cfg.eos_token_id,
                                    seed=c.seed)
        return MultiSourceDataset({"speech": speech, "text": text},
                                  {"speech": c.speech_proportion, "text": c.text_proportion},
                                  max_tokens={"text": c.text_max_tokens})

    def _speech_collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._collater(items)
        mels, mel_lengths = fbank(batch["wav"], self.cfg.sample_rate, num_mel_bins=self.model_cfg.num_mel_bins,
                                  lengths=batch["lengths"])
        batch["mels"], batch["mel_lengths"] = mels.float(), mel_lengths
        return batch

    def collate(self, items: list[Any]) -> dict[str, Any]:
        return self._sources(items)

    # --- loss -----------------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        out = model(batch, tuple(self.cfg.labels))
        c = self.cfg
        if batch["source"] == "text":
            tokens, lengths = batch["tokens"], batch["lengths"]
            valid = ~padding_mask(lengths, tokens.shape[1])
            ce = masked_prediction_loss(out["logits"][valid].float(), tokens[valid])
            size = int(valid.sum())
            loss = c.text_weight * ce.loss + c.diversity_weight * out["diversity_loss"] * size
            logs = {"loss_text": float(ce.loss.detach()), "correct_text": float(ce.correct),
                    "count_text": float(ce.count), "diversity_text": float(out["diversity_loss"].detach()) * size,
                    "code_ppl_text": out["code_perplexity"] * size}
            return loss, float(size), logs
        loss, size, logs = self.unit_loss(out)
        mels, before, after = batch["mels"], out["mel_before"], out["mel_after"]
        T = before.shape[1]
        valid = ~padding_mask(out["mel_lengths"], T)  # (B, T')
        target = mels[:, :T]
        n = valid.sum().clamp(min=1)
        l1 = ((before - target).abs().mean(-1)[valid].sum() + (after - target).abs().mean(-1)[valid].sum()) / n
        stop_labels = torch.zeros_like(out["stop_logits"])
        last = (out["mel_lengths"] - 1).clamp(min=0)
        stop_labels[torch.arange(len(last)), last] = 1.0
        bce = F.binary_cross_entropy_with_logits(out["stop_logits"][valid], stop_labels[valid],
                                                 pos_weight=torch.tensor(c.stop_pos_weight, device=before.device))
        loss = loss + size * (c.mel_weight * (l1 + bce) + c.diversity_weight * out["diversity_loss"])
        logs.update(mel_l1=float(l1.detach()) * size, stop_bce=float(bce.detach()) * size,
                    diversity_speech=float(out["diversity_loss"].detach()) * size,
                    code_ppl_speech=out["code_perplexity"] * size)
        return loss, float(size), logs

    def on_update(self, model: nn.Module, num_updates: int) -> None:
        """Anneal the quantizer temperature (kept in the model's ``num_updates`` buffer)."""
        getattr(model, "module", model).num_updates.fill_(int(num_updates))
