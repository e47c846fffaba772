"""LightHuBERT upstream: a HuBERT trunk whose transformer is a weight-sharing supernet.

Data flow as :class:`speechssl.nn.trunk.Wav2Vec2Trunk`, run at one subnet's width ``E``::

    wav (B, S) ─[normalize]─ conv encoder ─▶ (B, T, C) ─ LayerNorm ─ post_extract_proj[:E] ─ dropout_input
        ─ [mask: frames ← mask_emb[:E]] ─ supernet encoder (subnet) ─▶ hidden states (B, T, E) × (L' + 1)

Parameter names are fairseq's / the official LightHuBERT checkpoint's (``feature_extractor``,
``layer_norm``, ``post_extract_proj``, ``mask_emb``, ``encoder.pos_conv.0.weight_g``,
``encoder.layers.{i}.self_attn.q_proj`` ...). The upstream runs :attr:`subnet` (the config's,
by default the search space's largest); :meth:`encode` takes any subnet of the space.
:meth:`extract_subnet` returns the standalone model of one subnet (only its weights), which
``speechssl.hub.load(path, subnet=...)`` and ``speechssl hub export --subnet`` give.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from speechssl.nn.conv_extractor import ConvFeatureExtractor
from speechssl.nn.lengths import conv_out_lengths, pad_waveforms
from speechssl.nn.supernet import Subnet, SupernetEncoder, format_spec
from speechssl.nn.trunk import conv_features, time_mask
from speechssl.upstream.lighthubert.config import LightHubertConfig, parse_subnet

__all__ = ["LightHubertModel", "SupernetOutput"]


@dataclass
class SupernetOutput:
    """What :meth:`LightHubertModel.encode` returns.

    Attributes:
        hidden_states: ``[h_0, ..., h_L']`` each ``(B, T, E)``, padded frames 0.
        lengths: ``(B,)`` valid frames.
        features: ``(B, T, C)`` conv features (for the feature penalty).
        mask_indices: ``(B, T)`` bool frames replaced by the mask embedding, or None.
    """

    hidden_states: list[torch.Tensor]
    lengths: torch.Tensor
    features: torch.Tensor
    mask_indices: torch.Tensor | None


class LightHubertModel(nn.Module):
    """The LightHuBERT supernet as an upstream (contract of :class:`speechssl.nn.trunk.Wav2Vec2Trunk`).

    Attributes:
        config: the :class:`LightHubertConfig`.
        subnet: the :class:`~speechssl.nn.supernet.Subnet` :meth:`forward` runs (``config.subnet``).
        downsample_rate: samples per frame.
        hidden_sizes: ``[E] * (L' + 1)`` of :attr:`subnet`.
    """

    method = "lighthubert"

    def __init__(self, config: LightHubertConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        D = config.encoder_embed_dim
        self.feature_extractor = ConvFeatureExtractor(config.conv_feature_layers, config.extractor_mode,
                                                      config.conv_bias)
        C = self.feature_extractor.out_channels
        self.layer_norm = nn.LayerNorm(C)
        self.post_extract_proj = nn.Linear(C, D)
        self.dropout_input = nn.Dropout(config.dropout_input)
        self.mask_emb = nn.Parameter(torch.empty(D).uniform_())
        self.encoder = SupernetEncoder(
            D, config.encoder_ffn_embed_dim, config.encoder_layers, config.encoder_attention_heads,
            dropout=config.dropout, attention_dropout=config.attention_dropout,
            activation_dropout=config.activation_dropout, activation_fn=config.activation_fn,
            layer_norm_first=config.layer_norm_first, layer_norm_eps=config.layer_norm_eps,
            conv_pos=config.conv_pos, conv_pos_groups=config.conv_pos_groups, head_dim=config.head_dim,
            layer_heads=config.layer_heads or None, layer_ffn_dims=config.layer_ffn_dims or None,
            stored_pos_kernel=config.is_extracted)
        self.downsample_rate: int = config.downsample_rate
        self.subnet = self.check_subnet(config.subnet)
        self.hidden_sizes: list[int] = [self.subnet.embed_dim] * (self.subnet.num_layers + 1)

    @classmethod
    def from_config(cls, config: LightHubertConfig) -> "LightHubertModel":
        return cls(config)

    @property
    def receptive_field(self) -> int:
        return self.feature_extractor.receptive_field

    def check_subnet(self, subnet: Subnet) -> Subnet:
        """``subnet`` if it fits this supernet, else ValueError naming the dimension."""
        self.encoder.check(subnet)
        return subnet

    def parse_subnet(self, spec: str | Mapping[str, Any] | Subnet) -> Subnet:
        """The subnet a spec names (:func:`~speechssl.upstream.lighthubert.config.parse_subnet`), checked to fit."""
        return self.check_subnet(parse_subnet(spec, self.config))

    @property
    def full_subnet(self) -> Subnet:
        """Every weight of the supernet: width ``D``, all heads, the full FFN, every layer."""
        enc = self.encoder
        return Subnet(enc.dim, tuple(layer.num_heads for layer in enc.layers),
                      tuple(layer.ffn_dim for layer in enc.layers))

    @torch.no_grad()
    def extract_subnet(self, spec: str | Mapping[str, Any] | Subnet) -> "LightHubertModel":
        """The standalone model of one subnet: only its weights, in a config of width ``E``.

        Run whole, it returns the hidden states this supernet returns running that subnet (the
        weights are the same numbers, copied out of their slices). It is in this model's mode,
        on its device, and records the subnet in ``hub_source``.

        Raises:
            ValueError: a spec outside the search space (naming the field and its allowed values).
        """
        subnet = self.parse_subnet(spec)
        model = LightHubertModel(self.config.extracted(subnet))
        E = subnet.embed_dim
        state = {k: v.clone() for k, v in self.state_dict().items()
                 if k.startswith(("feature_extractor.", "layer_norm."))}
        state["post_extract_proj.weight"] = self.post_extract_proj.weight[:E].clone()
        state["post_extract_proj.bias"] = self.post_extract_proj.bias[:E].clone()
        state["mask_emb"] = self.mask_emb[:E].clone()
        state.update({f"encoder.{k}": v for k, v in self.encoder.extract(subnet).items()})
        model.load_state_dict(state, strict=True)
        source = dict(getattr(self, "hub_source", None) or {})
        source["subnet"] = format_spec(subnet)
        model.hub_source = source
        return model.to(self.mask_emb.device).train(self.training)

    def subnet_stats(self, spec: str | Mapping[str, Any] | Subnet | None = None,
                     num_samples: int = 16000) -> dict[str, Any]:
        """``{"subnet": spec, "params": int, "macs": int}`` of a subnet over ``num_samples`` samples (1 s).

        ``spec`` None: the whole supernet (every parameter; MACs of running it at full width).
        """
        if spec is None:
            return {"subnet": "supernet", "params": sum(p.numel() for p in self.parameters()),
                    "macs": self.num_macs(num_samples, self.full_subnet)}
        subnet = self.parse_subnet(spec)
        # num_params leaves out the position convolution's magnitude g (K numbers); the extracted model holds it
        magnitude = self.encoder.pos_conv[0].weight_g.numel()
        return {"subnet": format_spec(subnet), "params": self.num_params(subnet) + magnitude,
                "macs": self.num_macs(num_samples, subnet)}

    def num_params(self, subnet: Subnet | None = None) -> int:
        """Parameters the upstream uses when it runs ``subnet`` (default :attr:`subnet`)."""
        subnet = subnet or self.subnet
        E = subnet.embed_dim
        C = self.post_extract_proj.in_features
        front = sum(p.numel() for p in self.feature_extractor.parameters()) + 2 * C
        return front + C * E + E + E + self.encoder.num_params(subnet)

    def num_macs(self, num_samples: int = 16000, subnet: Subnet | None = None) -> int:
        """Multiply-accumulates of one forward over ``num_samples`` samples (default 1 s) running ``subnet``."""
        subnet = subnet or self.subnet
        frames, total = int(num_samples), 0
        c_in = 1
        for c_out, kernel, stride in self.config.conv_feature_layers:
            frames = conv_out_lengths(frames, kernel, stride)
            total += frames * c_out * c_in * kernel
            c_in = c_out
        total += frames * c_in * subnet.embed_dim  # post_extract_proj
        return total + self.encoder.num_macs(subnet, frames)

    def forward_features(self, source: torch.Tensor, lengths: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms ``(B, S)`` → conv features ``(B, T, C)`` and frame lengths ``(B,)``."""
        return conv_features(self.feature_extractor, self.config, source, lengths)

    def encode(self, features: torch.Tensor, lengths: torch.Tensor, subnet: Subnet | None = None, *,
               mask: bool | torch.Tensor = False, generator: torch.Generator | None = None) -> SupernetOutput:
        """Conv features ``(B, T, C)`` → hidden states of ``subnet`` (default :attr:`subnet`).

        Args:
            mask: False, True (sample a time mask with the config's settings) or a ``(B, T)`` bool mask.
            generator: CPU generator of the sampled mask (None: torch's global RNG).
        """
        subnet = subnet or self.subnet
        E = subnet.embed_dim
        B, T, _ = features.shape
        x = self.layer_norm(features)
        x = F.linear(x, self.post_extract_proj.weight[:E], self.post_extract_proj.bias[:E])
        x = self.dropout_input(x)  # (B, T, E)
        mask_indices = time_mask(self.config, mask, lengths, (B, T), x.device, generator)
        if mask_indices is not None:
            x = torch.where(mask_indices.unsqueeze(-1), self.mask_emb[:E].to(x.dtype), x)
        hidden = self.encoder(x, subnet, lengths)
        return SupernetOutput(hidden, lengths, features, mask_indices)

    def forward(self, wavs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """The upstream contract for :attr:`subnet`: ``B`` waveforms ``(S_i,)`` at 16 kHz.

        Returns:
            ``hidden_states`` (``L' + 1`` tensors ``(B, T, E)``), ``last_hidden_state``, ``lengths`` ``(B,)``.
        """
        x, lengths = pad_waveforms(wavs)
        if x.shape[1] < self.receptive_field:
            empty = x.new_zeros(x.shape[0], 0, self.subnet.embed_dim)
            return {"hidden_states": [empty] * len(self.hidden_sizes), "last_hidden_state": empty,
                    "lengths": torch.zeros_like(lengths)}
        features, frame_lengths = self.forward_features(x, lengths)
        out = self.encode(features, frame_lengths)
        return {"hidden_states": out.hidden_states, "last_hidden_state": out.hidden_states[-1],
                "lengths": out.lengths}
