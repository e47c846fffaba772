"""SpeechT5's pretraining model: the upstream plus HuBERT's unit head and the cross-modal quantizer.

:class:`SpeechT5PretrainModel` is a :class:`speechssl.nn.unit_prediction.UnitPredictionModel`
(``upstream`` = :class:`~speechssl.upstream.speecht5.model.SpeechT5Model`, ``final_proj``,
``label_embs_concat``) with a :class:`speechssl.nn.quantizer.GumbelVectorQuantizer`
(``codebook_groups`` × ``codebook_vars``, code width ``D``) over the shared encoder's output.
Before the decoder's cross-attention reads the encoder output, a fraction ``codebook_mix_prob``
of its valid positions is replaced by their quantized vectors (speech and text alike), so both
modalities share the codebook; the diversity loss keeps the codebook in use.

* speech batches: masked unit prediction on the encoder output (HuBERT), then the speech decoder
  reconstructs the log-mel spectrogram from the mixed encoder output;
* text batches: the text encoder reads the BART-corrupted tokens, the text decoder reconstructs
  the originals.

The quantizer's temperature follows the persistent buffer ``num_updates`` (set by the task's
``on_update``), so it is restored with the model on resume.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from speechssl.nn.lengths import padding_mask
from speechssl.nn.quantizer import GumbelVectorQuantizer
from speechssl.nn.unit_prediction import UnitPredictionModel
from speechssl.upstream.speecht5.config import SpeechT5Config
from speechssl.upstream.speecht5.model import SpeechT5Model, shift_tokens_right, speech_decoder_inputs

__all__ = ["SpeechT5PretrainModel"]


class SpeechT5PretrainModel(UnitPredictionModel):
    """SpeechT5 upstream + unit head + cross-modal quantizer (see the module docstring).

    Args:
        config: a :class:`SpeechT5Config` with every part (text encoder, text decoder, speech decoder).
        num_classes, label_rates, sample_rate: the unit label sets (see ``UnitPredictionModel``).
    """

    upstream_cls = SpeechT5Model

    def __init__(self, config: SpeechT5Config, num_classes: Sequence[int], label_rates: Sequence[float],
                 sample_rate: int = 16000) -> None:
        missing = [p for p in ("text_encoder", "text_decoder", "speech_decoder") if not getattr(config, p)]
        if missing:
            raise ValueError(f"pretraining needs every SpeechT5 part; the config disables {', '.join(missing)}")
        super().__init__(config, num_classes, label_rates, sample_rate)
        D = config.encoder_embed_dim
        self.quantizer = GumbelVectorQuantizer(D, config.codebook_groups, config.codebook_vars, D,
                                               tuple(config.codebook_temperature))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def mix(self, h: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Replace ``codebook_mix_prob`` of the valid positions of ``h`` by their quantized vectors.

        Args:
            h: ``(B, T, D)`` encoder output; lengths: ``(B,)``.

        Returns:
            mixed ``(B, T, D)``, the diversity loss (scalar), the code perplexity.
        """
        self.quantizer.set_num_updates(int(self.num_updates))
        valid = ~padding_mask(lengths, h.shape[1])
        q = self.quantizer(h, mask=valid)
        p = self.config.codebook_mix_prob if self.training else 0.0
        replace = (torch.rand(h.shape[:2]) < p).to(h.device) & valid  # (B, T)
        mixed = torch.where(replace.unsqueeze(-1), q.quantized.to(h.dtype), h)
        return mixed, q.diversity_loss, float(q.code_perplexity)

    def forward_speech(self, source: torch.Tensor, lengths: torch.Tensor, targets: Sequence[torch.Tensor],
                       target_lengths: Sequence[torch.Tensor], mels: torch.Tensor, mel_lengths: torch.Tensor
                       ) -> dict[str, Any]:
        """Speech batch: unit predictions (the ``UnitPredictionOutput`` keys) plus the mel reconstruction.

        Args:
            source, lengths, targets, target_lengths: see ``UnitPredictionModel.forward``.
            mels: ``(B, T_m, M)`` log-mel targets; mel_lengths: ``(B,)``.

        Returns:
            the unit output plus ``mel_before``/``mel_after`` ``(B, T', M)``, ``stop_logits`` ``(B, T')``
            (``T' = r · floor(T_m / r)``), ``mel_lengths`` ``(B,)`` valid predicted frames,
            ``diversity_loss``, ``code_perplexity``.
        """
        units, feats = self.forward_units(source, lengths, targets, target_lengths, mask=True)
        memory = feats.hidden_states[-1]
        mixed, diversity, code_ppl = self.mix(memory, feats.lengths)
        r = self.config.reduction_factor
        dec_in, steps = speech_decoder_inputs(mels, mel_lengths, r)
        before, after, stop = self.upstream.decode_speech(dec_in, steps, mixed, feats.lengths)
        out = dict(units)
        out.update(mel_before=before, mel_after=after, stop_logits=stop, mel_lengths=steps * r,
                   diversity_loss=diversity, code_perplexity=code_ppl)
        return out

    def forward_text(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor, tokens: torch.Tensor,
                     lengths: torch.Tensor) -> dict[str, Any]:
        """Text batch: corrupted ``src_tokens`` ``(B, L')`` → logits ``(B, L, V)`` for the clean ``tokens``."""
        cfg = self.config
        memory = self.upstream.encode_text(src_tokens, src_lengths)[-1]
        mixed, diversity, code_ppl = self.mix(memory, src_lengths)
        dec_in = shift_tokens_right(tokens, lengths, cfg.decoder_start_token_id, cfg.pad_token_id)
        logits = self.upstream.decode_text(dec_in, lengths, mixed, src_lengths)
        return {"logits": logits, "diversity_loss": diversity, "code_perplexity": code_ppl}

    def forward(self, batch: dict[str, Any], labels: Sequence[str] = ("km",)) -> dict[str, Any]:  # type: ignore[override]
        """One batch of either source (``batch["source"]`` ``"speech"`` or ``"text"``, see the task)."""
        if batch.get("source") == "text":
            return self.forward_text(batch["src_tokens"], batch["src_lengths"], batch["tokens"], batch["lengths"])
        return self.forward_speech(batch["wav"], batch["lengths"], [batch[k] for k in labels],
                                   [batch[f"{k}_lengths"] for k in labels], batch["mels"], batch["mel_lengths"])
