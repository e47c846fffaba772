"""Build fairseq-format checkpoints from speechssl models (fairseq itself cannot be installed).

Key names, nesting and config fields follow fairseq's source:
``fairseq/models/wav2vec/wav2vec2.py`` (``ConvFeatureExtractionModel`` blocks ``Sequential(conv,
Dropout, norm, GELU)`` with the layer norm wrapped as ``Sequential(TransposeLast, LayerNorm,
TransposeLast)``; ``make_conv_pos`` = ``Sequential(weight_norm(conv, dim=2), SamePad, GELU)``;
``TransformerSentenceEncoderLayer`` with ``self_attn``, ``self_attn_layer_norm``, ``fc1``,
``fc2``, ``final_layer_norm``), ``fairseq/models/hubert/hubert.py`` (``label_embs_concat``,
``final_proj``), ``GumbelVectorQuantizer`` (``vars``, ``weight_proj``) and ``Trainer.state_dict``
(``args``, ``cfg``, ``model``, ``criterion``, ``optimizer_history``, ``task_state``,
``extra_state``, ``last_optimizer_state``). The key list is written out here from those facts,
not copied from speechssl, so a naming drift in speechssl fails the tests.
"""
from __future__ import annotations

import argparse
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from speechssl.upstream.hubert.config import HubertConfig


def fairseq_upstream_keys(cfg: HubertConfig) -> list[str]:
    """The fairseq parameter names of the upstream part of HubertModel / Wav2Vec2Model."""
    keys = ["mask_emb"]
    for i, _ in enumerate(cfg.conv_feature_layers):
        keys.append(f"feature_extractor.conv_layers.{i}.0.weight")
        if cfg.conv_bias:
            keys.append(f"feature_extractor.conv_layers.{i}.0.bias")
        if cfg.extractor_mode == "layer_norm":
            keys += [f"feature_extractor.conv_layers.{i}.2.1.weight", f"feature_extractor.conv_layers.{i}.2.1.bias"]
        elif i == 0:
            keys += ["feature_extractor.conv_layers.0.2.weight", "feature_extractor.conv_layers.0.2.bias"]
    keys += ["layer_norm.weight", "layer_norm.bias"]
    if cfg.conv_feature_layers[-1][0] != cfg.encoder_embed_dim:
        keys += ["post_extract_proj.weight", "post_extract_proj.bias"]
    keys += ["encoder.pos_conv.0.bias", "encoder.pos_conv.0.weight_g", "encoder.pos_conv.0.weight_v"]
    for j in range(cfg.encoder_layers):
        for name in ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj",
                     "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm"):
            keys += [f"encoder.layers.{j}.{name}.weight", f"encoder.layers.{j}.{name}.bias"]
    keys += ["encoder.layer_norm.weight", "encoder.layer_norm.bias"]
    return keys


def conv_layers_string(layers: tuple[tuple[int, int, int], ...]) -> str:
    """fairseq's string form, run-length grouped: ``[(16, 10, 5)] + [(16, 3, 2)] * 2``."""
    parts: list[str] = []
    i = 0
    while i < len(layers):
        j = i
        while j + 1 < len(layers) and layers[j + 1] == layers[i]:
            j += 1
        item = f"[{tuple(layers[i])}]"
        parts.append(item if j == i else f"{item} * {j - i + 1}")
        i = j + 1
    return " + ".join(parts)


def _model_fields(cfg: HubertConfig) -> dict[str, Any]:
    """Fields fairseq's HubertConfig and Wav2Vec2Config share, with this model's values."""
    return {
        "extractor_mode": cfg.extractor_mode, "encoder_layers": cfg.encoder_layers,
        "encoder_embed_dim": cfg.encoder_embed_dim, "encoder_ffn_embed_dim": cfg.encoder_ffn_embed_dim,
        "encoder_attention_heads": cfg.encoder_attention_heads,
        "activation_fn": {"gelu": "gelu", "gelu_tanh": "gelu_accurate"}[cfg.activation_fn],
        "layer_type": "transformer", "dropout": cfg.dropout, "attention_dropout": cfg.attention_dropout,
        "activation_dropout": cfg.activation_dropout, "encoder_layerdrop": cfg.encoder_layerdrop,
        "dropout_input": cfg.dropout_input, "dropout_features": cfg.dropout_features,
        "final_dim": cfg.final_dim, "layer_norm_first": cfg.layer_norm_first,
        "conv_feature_layers": conv_layers_string(cfg.conv_feature_layers), "conv_bias": cfg.conv_bias,
        "logit_temp": cfg.logit_temp, "target_glu": getattr(cfg, "target_glu", False), "feature_grad_mult": cfg.feature_grad_mult,
        "mask_length": cfg.mask_length, "mask_prob": cfg.mask_prob, "mask_selection": cfg.mask_selection,
        "mask_other": cfg.mask_other, "no_mask_overlap": cfg.no_mask_overlap, "mask_min_space": cfg.mask_min_space,
        "mask_channel_length": cfg.mask_channel_length, "mask_channel_prob": cfg.mask_channel_prob,
        "mask_channel_selection": cfg.mask_channel_selection, "mask_channel_other": cfg.mask_channel_other,
        "no_mask_channel_overlap": cfg.no_mask_channel_overlap,
        "mask_channel_min_space": cfg.mask_channel_min_space, "conv_pos": cfg.conv_pos,
        "conv_pos_groups": cfg.conv_pos_groups, "latent_temp": [2.0, 0.5, 0.999995],
        "checkpoint_activations": False, "required_seq_len_multiple": 2, "depthwise_conv_kernel_size": 31,
        "attn_type": "", "pos_enc_type": "abs", "fp16": True,
    }


def hubert_model_cfg(cfg: HubertConfig) -> dict[str, Any]:
    return {"_name": "hubert", "label_rate": 50.0, **_model_fields(cfg), "untie_final_proj": cfg.untie_final_proj,
            "conv_pos_batch_norm": False, "skip_masked": cfg.skip_masked, "skip_nomask": cfg.skip_nomask}


def wav2vec2_model_cfg(cfg: HubertConfig) -> dict[str, Any]:
    return {"_name": "wav2vec2", **_model_fields(cfg), "quantize_targets": True, "quantize_input": False,
            "same_quantizer": False, "quantizer_depth": 1, "quantizer_factor": 3, "latent_vars": 8,
            "latent_groups": 2, "latent_dim": 0, "require_same_masks": True, "mask_dropout": 0.0,
            "mask_channel_before": False, "num_negatives": 100, "negatives_from_everywhere": False,
            "cross_sample_negatives": 0, "codebook_negatives": 0, "pos_conv_depth": 1,
            "max_positions": 100000, "crop_seq_to_multiple": 1, "adp_num": -1, "adp_dim": 64,
            "adp_act_fn": "relu", "adp_trf_idx": "all"}


def _hydra_cfg(model: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    return {
        "_name": None,
        "common": {"_name": None, "no_progress_bar": False, "log_interval": 200, "fp16": True, "seed": 1337},
        "distributed_training": {"_name": None, "distributed_world_size": 32, "ddp_backend": "no_c10d"},
        "dataset": {"_name": None, "num_workers": 6, "max_tokens": 1400000, "valid_subset": "valid"},
        "optimization": {"_name": None, "max_update": 400000, "lr": [0.0005], "update_freq": [1],
                         "clip_norm": 10.0, "sentence_avg": False},
        "checkpoint": {"_name": None, "save_dir": "/checkpoint/run", "save_interval_updates": 25000},
        "model": model,
        "task": task,
        "criterion": {"_name": "hubert", "pred_masked_weight": 1.0, "pred_nomask_weight": 0.0,
                      "loss_weights": [10.0], "log_keys": []},
        "optimizer": {"_name": "adam", "adam_betas": "(0.9,0.98)", "adam_eps": 1e-06, "weight_decay": 0.01},
        "lr_scheduler": {"_name": "polynomial_decay", "warmup_updates": 32000},
        "scoring": None, "bpe": None, "tokenizer": None,
        "ema": {"_name": None, "store_ema": False},
    }


def _trainer_extras(model_state: dict[str, torch.Tensor], criterion: str) -> dict[str, Any]:
    """The non-model entries of fairseq's ``Trainer.state_dict`` (numpy values as fairseq logs them)."""
    first = next(iter(model_state))
    meters = [("loss", "AverageMeter", {"val": np.float64(3.2), "sum": np.float64(640.0), "count": 200, "round": 3}),
              ("wall", "TimeMeter", {"init": 0, "n": 0, "round": 0}),
              ("accuracy", "AverageMeter", {"val": np.float32(0.41), "sum": np.float32(82.0), "count": 200,
                                            "round": None})]
    return {
        "criterion": None,
        "optimizer_history": [{"criterion_name": criterion, "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": np.float64(3.1)}, "num_updates": 1234}],
        "task_state": {},
        "extra_state": {"metrics": OrderedDict([("train", meters), ("default", [])]),
                        "previous_training_time": 12345.6,
                        "train_iterator": {"epoch": 3, "iterations_in_epoch": 17, "shuffle": True},
                        "best": np.float64(3.05)},
        "last_optimizer_state": {"state": {0: {"step": 1234, "exp_avg": torch.zeros_like(model_state[first]),
                                               "exp_avg_sq": torch.zeros_like(model_state[first])}},
                                 "param_groups": [{"lr": 0.0005, "betas": (0.9, 0.98), "eps": 1e-06,
                                                   "weight_decay": 0.01, "params": [0]}]},
    }


def _upstream_state(model: torch.nn.Module, pos_conv_naming: str) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    keys = fairseq_upstream_keys(model.config)
    assert set(keys) == set(sd), f"speechssl names differ from fairseq's: {set(keys) ^ set(sd)}"
    state = OrderedDict((k, sd[k].clone()) for k in keys)
    if pos_conv_naming == "parametrizations":
        state["encoder.pos_conv.0.parametrizations.weight.original0"] = state.pop("encoder.pos_conv.0.weight_g")
        state["encoder.pos_conv.0.parametrizations.weight.original1"] = state.pop("encoder.pos_conv.0.weight_v")
    return state


def hubert_checkpoint(model: torch.nn.Module, *, num_classes: tuple[int, ...] = (12,),
                      pos_conv_naming: str = "weight_g") -> dict[str, Any]:
    """A fairseq HuBERT pretraining checkpoint (hydra ``cfg`` as a plain dict) holding ``model``'s weights."""
    cfg = model.config
    gen = torch.Generator().manual_seed(7)
    D = cfg.encoder_embed_dim
    final_dim = cfg.final_dim if cfg.final_dim > 0 else D
    state = _upstream_state(model, pos_conv_naming)
    n = len(num_classes)
    out_dim = final_dim * n if cfg.untie_final_proj else final_dim
    state["final_proj.weight"] = torch.randn(out_dim, D, generator=gen)
    state["final_proj.bias"] = torch.randn(out_dim, generator=gen)
    state["label_embs_concat"] = torch.randn(sum(num_classes), final_dim, generator=gen)
    task = {"_name": "hubert_pretraining", "data": "/checkpoint/data", "fine_tuning": False,
            "labels": ["km"], "label_dir": "/checkpoint/labels", "label_rate": 50.0, "sample_rate": 16000,
            "normalize": cfg.normalize, "enable_padding": False, "max_keep_size": None,
            "max_sample_size": 250000, "min_sample_size": 32000, "single_target": False,
            "random_crop": True, "pad_audio": False}
    return {"args": None, "cfg": _hydra_cfg(hubert_model_cfg(cfg), task), "model": state,
            **_trainer_extras(state, "HubertCriterion")}


def _wav2vec2_heads(cfg: HubertConfig, gen: torch.Generator, groups: int = 2, num_vars: int = 8
                    ) -> dict[str, torch.Tensor]:
    D = cfg.encoder_embed_dim
    C = cfg.conv_feature_layers[-1][0]
    final_dim = cfg.final_dim if cfg.final_dim > 0 else D
    vq_dim = final_dim  # latent_dim 0 → final_dim
    return {
        "quantizer.vars": torch.randn(1, groups * num_vars, vq_dim // groups, generator=gen),
        "quantizer.weight_proj.weight": torch.randn(groups * num_vars, C, generator=gen),
        "quantizer.weight_proj.bias": torch.randn(groups * num_vars, generator=gen),
        "project_q.weight": torch.randn(final_dim, vq_dim, generator=gen),
        "project_q.bias": torch.randn(final_dim, generator=gen),
        "final_proj.weight": torch.randn(final_dim, D, generator=gen),
        "final_proj.bias": torch.randn(final_dim, generator=gen),
    }


def wav2vec2_checkpoint(model: torch.nn.Module, *, legacy_args: bool = False,
                        pos_conv_naming: str = "weight_g") -> dict[str, Any]:
    """A fairseq wav2vec 2.0 pretraining checkpoint: hydra ``cfg`` dict, or legacy ``args`` Namespace."""
    cfg = model.config
    gen = torch.Generator().manual_seed(8)
    state = _upstream_state(model, pos_conv_naming)
    state.update(_wav2vec2_heads(cfg, gen))
    task = {"_name": "audio_pretraining", "data": "/checkpoint/data", "labels": None,
            "sample_rate": 16000, "normalize": cfg.normalize, "enable_padding": False,
            "max_sample_size": 250000, "min_sample_size": 32000}
    extras = _trainer_extras(state, "Wav2vecCriterion")
    if legacy_args:
        flat = {k: v for k, v in wav2vec2_model_cfg(cfg).items() if k != "_name"}
        args = argparse.Namespace(arch="wav2vec2", task="audio_pretraining", criterion="wav2vec",
                                  data="/checkpoint/data", sample_rate=16000, normalize=cfg.normalize,
                                  max_sample_size=250000, lr=[0.0005], optimizer="adam", **flat)
        return {"args": args, "model": state, **extras}
    return {"args": None, "cfg": _hydra_cfg(wav2vec2_model_cfg(cfg), task), "model": state, **extras}


def finetuned_checkpoint(model: torch.nn.Module, *, kind: str = "hubert_ctc", vocab: int = 32) -> dict[str, Any]:
    """A fairseq CTC fine-tuned checkpoint: the encoder under ``w2v_encoder.w2v_model.`` + a CTC layer."""
    cfg = model.config
    gen = torch.Generator().manual_seed(9)
    pre = hubert_checkpoint(model) if kind == "hubert_ctc" else wav2vec2_checkpoint(model)
    state = OrderedDict(("w2v_encoder.w2v_model." + k, v) for k, v in _upstream_state(model, "weight_g").items())
    state["w2v_encoder.proj.weight"] = torch.randn(vocab, cfg.encoder_embed_dim, generator=gen)
    state["w2v_encoder.proj.bias"] = torch.randn(vocab, generator=gen)
    model_cfg = {"_name": kind, "w2v_path": "/checkpoint/pretrained.pt", "no_pretrained_weights": False,
                 "dropout_input": 0.0, "final_dropout": 0.0, "dropout": 0.0, "apply_mask": True,
                 "mask_prob": 0.65, "freeze_finetune_updates": 10000, "feature_grad_mult": 0.0,
                 "normalize": cfg.normalize, "w2v_args": pre["cfg"]}
    task = {"_name": pre["cfg"]["task"]["_name"], "fine_tuning": True, "labels": ["ltr"],
            "normalize": cfg.normalize, "sample_rate": 16000}
    return {"args": None, "cfg": _hydra_cfg(model_cfg, task), "model": state, **_trainer_extras(state, "CtcCriterion")}
