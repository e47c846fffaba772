"""Shared neural-network layers (import the submodule you need).

* :mod:`speechssl.nn.lengths` — padding, masks and every frame/patch count (clamped at 0).
* :mod:`speechssl.nn.trunk` — the wav2vec 2.0 / HuBERT trunk (conv encoder + projection + transformer).
* :mod:`speechssl.nn.conv_extractor` — the wav2vec 2.0 / HuBERT convolutional waveform encoder.
* :mod:`speechssl.nn.transformer` — post-LN / pre-LN transformer encoder with an injected position
  module and layer drop.
* :mod:`speechssl.nn.position` — sinusoidal, relative (SpeechT5), Transformer-XL and rotary positions.
* :mod:`speechssl.nn.pos_conv` — weight-normalised convolutional position embedding.
* :mod:`speechssl.nn.conformer` — conformer block and encoder (rel_pos, rotary, Shaw relative keys).
* :mod:`speechssl.nn.fbank_stack` — 80-bin log-mel fbank stacked in pairs to 160 dims at 50 Hz (w2v-BERT 2.0).
* :mod:`speechssl.nn.unit_prediction` — HuBERT's masked unit-prediction head on the trunk.
* :mod:`speechssl.nn.contrastive` — wav2vec 2.0 distractor sampling and contrastive loss.
* :mod:`speechssl.nn.pooling` — utterance pooling over valid frames (mean, attention).
* :mod:`speechssl.nn.decoder` — transformer decoder (causal self-attention + cross-attention; SpeechT5).
* :mod:`speechssl.nn.vit` — ViT patch embedding, 2-D sin-cos positions, patchify, the image upstream.
* :mod:`speechssl.nn.token_masking` — MAE's random token masking from explicit noise, and its restore.
* :mod:`speechssl.nn.attention` — multi-head self-attention with key padding masks.
* :mod:`speechssl.nn.quantizer` — Gumbel vector quantizer.
* :mod:`speechssl.nn.losses` — masked prediction, InfoNCE / NT-Xent, masked MSE, layer distillation.
* :mod:`speechssl.nn.frozen` — run a frozen upstream over a batch of audio.
* :mod:`speechssl.nn.norm` — masked GroupNorm, float32 LayerNorm.
* :mod:`speechssl.nn.masking` — span masking (fairseq ``compute_mask_indices``).
* :mod:`speechssl.nn.grad` — gradient scaling.
* :mod:`speechssl.nn.activations` — activations by name.
* :mod:`speechssl.nn.ssm` — selective state-space layers.
"""
