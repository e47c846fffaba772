"""Key table between :class:`~speechssl.upstream.mae.model.MAEPretrainModel` and ``transformers.ViTMAEForPreTraining``.

Both layouts of transformers' ViTMAE layers are read: 5.x (``vit.layers.{i}.attention.q_proj``,
``mlp.fc1``) and 4.x (``vit.encoder.layer.{i}.attention.attention.query``,
``intermediate.dense``). The fixed sin-cos tables (``position_embeddings``,
``decoder_pos_embed``) are not weights here: :func:`hf_to_speechssl` checks that they equal
ours (class-token row 0, then :func:`speechssl.nn.vit.sincos_2d_table` with ``order="wh"``) and
drops them. Any key the table does not know, and any of ours left without a value, is an error
naming it.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from speechssl.nn.vit import sincos_2d_table
from speechssl.upstream.mae.config import MAEConfig

__all__ = ["hf_to_speechssl", "config_to_hf", "config_from_hf", "LAYER_KEYS"]

#: HF layer sub-key (5.x and 4.x names) → ours, inside one transformer layer
LAYER_KEYS = {
    "attention.q_proj": "self_attn.q_proj", "attention.k_proj": "self_attn.k_proj",
    "attention.v_proj": "self_attn.v_proj", "attention.o_proj": "self_attn.out_proj",
    "attention.attention.query": "self_attn.q_proj", "attention.attention.key": "self_attn.k_proj",
    "attention.attention.value": "self_attn.v_proj", "attention.output.dense": "self_attn.out_proj",
    "layernorm_before": "self_attn_layer_norm", "layernorm_after": "final_layer_norm",
    "mlp.fc1": "fc1", "mlp.fc2": "fc2", "intermediate.dense": "fc1", "output.dense": "fc2",
}
_FIXED = {"vit.embeddings.position_embeddings": "encoder", "decoder.decoder_pos_embed": "decoder"}
_DIRECT = {
    "vit.embeddings.cls_token": "upstream.vit.cls_token",
    "vit.embeddings.patch_embeddings.projection.weight": "upstream.vit.patch_embed.proj.weight",
    "vit.embeddings.patch_embeddings.projection.bias": "upstream.vit.patch_embed.proj.bias",
    "vit.layernorm.weight": "upstream.vit.encoder.layer_norm.weight",
    "vit.layernorm.bias": "upstream.vit.encoder.layer_norm.bias",
    "decoder.mask_token": "mask_token",
    "decoder.decoder_embed.weight": "decoder_embed.weight", "decoder.decoder_embed.bias": "decoder_embed.bias",
    "decoder.decoder_norm.weight": "decoder.layer_norm.weight", "decoder.decoder_norm.bias": "decoder.layer_norm.bias",
    "decoder.decoder_pred.weight": "decoder_pred.weight", "decoder.decoder_pred.bias": "decoder_pred.bias",
}
_LAYER = re.compile(r"^(vit\.layers|vit\.encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)\.(weight|bias)$")
_STACK = {"vit.layers": "upstream.vit.encoder.layers", "vit.encoder.layer": "upstream.vit.encoder.layers",
          "decoder.decoder_layers": "decoder.layers"}


def _our_key(key: str) -> str:
    if key in _DIRECT:
        return _DIRECT[key]
    m = _LAYER.match(key)
    if m and m.group(3) in LAYER_KEYS:
        return f"{_STACK[m.group(1)]}.{m.group(2)}.{LAYER_KEYS[m.group(3)]}.{m.group(4)}"
    raise KeyError(f"ViTMAEForPreTraining key {key!r} is not in the MAE key table (upstream/mae/hf.py)")


def _expected_table(config: MAEConfig, which: str) -> torch.Tensor:
    grid = (config.image_size // config.patch,) * 2
    dim = config.dim if which == "encoder" else config.decoder_dim
    table = sincos_2d_table(grid, dim, order="wh")
    return torch.cat([torch.zeros(1, dim), table]).unsqueeze(0)  # (1, 1 + N, D)


def hf_to_speechssl(state: Mapping[str, torch.Tensor], config: MAEConfig, *, atol: float = 1e-6
                    ) -> dict[str, torch.Tensor]:
    """``ViTMAEForPreTraining.state_dict()`` → a state dict for ``MAEPretrainModel(config)`` (strict)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _FIXED:
            expected = _expected_table(config, _FIXED[key])
            if value.shape != expected.shape or not torch.allclose(value.float(), expected, atol=atol, rtol=0):
                raise ValueError(f"{key}: not the fixed 2-D sin-cos table MAE uses (shape {tuple(value.shape)}, "
                                 f"expected {tuple(expected.shape)})")
            continue
        ours = _our_key(key)
        if ours in out:
            raise KeyError(f"ViTMAEForPreTraining key {key!r} maps to {ours!r}, which another key already filled")
        out[ours] = value
    return out


def config_to_hf(config: MAEConfig, *, mask_ratio: float = 0.75, norm_pix_loss: bool = True) -> Any:
    """The ``transformers.ViTMAEConfig`` of ``config`` (needs transformers; gelu, qkv biases, no dropout change)."""
    from transformers import ViTMAEConfig

    c = config
    return ViTMAEConfig(image_size=c.image_size, patch_size=c.patch, num_channels=c.channels, hidden_size=c.dim,
                        intermediate_size=c.ffn_dim, num_hidden_layers=c.layers, num_attention_heads=c.heads,
                        decoder_hidden_size=c.decoder_dim, decoder_intermediate_size=c.decoder_ffn_dim,
                        decoder_num_hidden_layers=c.decoder_layers, decoder_num_attention_heads=c.decoder_heads,
                        layer_norm_eps=c.layer_norm_eps, hidden_dropout_prob=c.dropout,
                        attention_probs_dropout_prob=c.attention_dropout, hidden_act="gelu", qkv_bias=True,
                        mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss)


def config_from_hf(hf: Any) -> MAEConfig:
    """An :class:`MAEConfig` from a ``transformers.ViTMAEConfig`` (square images and patches, gelu, qkv biases)."""
    if getattr(hf, "hidden_act", "gelu") != "gelu" or not getattr(hf, "qkv_bias", True):
        raise ValueError(f"ViTMAEConfig with hidden_act={hf.hidden_act!r}, qkv_bias={hf.qkv_bias}: only gelu with "
                         "query/key/value biases maps to MAEConfig")
    size, patch = hf.image_size, hf.patch_size
    if not isinstance(size, int) or not isinstance(patch, int):
        raise ValueError(f"ViTMAEConfig image_size={size!r}, patch_size={patch!r}: only square ints map to MAEConfig")
    return MAEConfig(image_size=size, channels=hf.num_channels, patch=patch, dim=hf.hidden_size,
                     ffn_dim=hf.intermediate_size, layers=hf.num_hidden_layers, heads=hf.num_attention_heads,
                     decoder_dim=hf.decoder_hidden_size, decoder_ffn_dim=hf.decoder_intermediate_size,
                     decoder_layers=hf.decoder_num_hidden_layers, decoder_heads=hf.decoder_num_attention_heads,
                     layer_norm_eps=hf.layer_norm_eps, dropout=hf.hidden_dropout_prob,
                     attention_dropout=hf.attention_probs_dropout_prob)
