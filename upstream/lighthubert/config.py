"""LightHuBERT model configuration: the supernet (a HuBERT trunk), its search space, its active subnet.

The supernet's sizes are the :class:`~speechssl.nn.trunk.TrunkConfig` fields (the official
checkpoints are 768-wide, 12 heads of 64, FFN 3072, 12 layers, for both spaces); the search
space (``space_*``) bounds the subnets; the ``subnet_*`` fields choose the subnet the model
runs as an upstream (empty: the space's largest). Presets:

* :func:`tiny` — a 128-wide, 3-layer supernet for CPU (embed {64, 128}, heads {1, 2}, FFN ratio
  {3, 4}, layers {2, 3});
* :func:`small` — LightHuBERT Small's space: embed {256, 384, 512}, heads {4, 6, 8}, FFN ratio
  {3, 3.5, 4}, layers {10, 11, 12};
* :func:`base` — LightHuBERT Base's space: embed {512, 640, 768}, heads {8, 10, 12}, FFN ratio
  {3.5, 4}, 12 layers.

Subnet specs (:func:`parse_subnet`): ``max``, ``min``, ``small`` / ``base`` (the official
released subnets: 384 dims, 6 heads, FFN 1536, 12 layers / 640, 10, 2560, 12), or a mapping
``{"embed_dim": E, "heads": [...], "ffn_dims": [...]}``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from speechssl.nn.conv_extractor import FAIRSEQ_CONV_LAYERS
from speechssl.nn.supernet import SearchSpace, Subnet
from speechssl.nn.trunk import TrunkConfig

__all__ = ["LightHubertConfig", "tiny", "small", "base", "PRESETS", "parse_subnet", "NAMED_SUBNETS"]

#: the subnets the official LightHuBERT release names (lighthubert_small.pt / lighthubert_base.pt)
NAMED_SUBNETS: dict[str, Subnet] = {
    "small": Subnet.uniform(384, 6, 4.0, 12),
    "base": Subnet.uniform(640, 10, 4.0, 12),
}


@dataclass
class LightHubertConfig(TrunkConfig):
    """Supernet sizes (the trunk fields), search space and active subnet of a LightHuBERT model."""

    space_embed_dims: tuple[int, ...] = (512, 640, 768)  # allowed widths E of a subnet
    space_heads: tuple[int, ...] = (8, 10, 12)  # allowed attention heads per layer
    space_ffn_ratios: tuple[float, ...] = (3.5, 4.0)  # allowed FFN width / E per layer
    space_layers: tuple[int, ...] = (12,)  # allowed numbers of layers
    head_dim: int = 64  # dims per attention head (LightHuBERT: 64)
    subnet_embed_dim: int = 0  # the upstream's subnet: width E (0: the space's largest subnet)
    subnet_heads: tuple[int, ...] = ()  # its heads per kept layer
    subnet_ffn_dims: tuple[int, ...] = ()  # its FFN width per kept layer

    @property
    def search_space(self) -> SearchSpace:
        return SearchSpace(tuple(self.space_embed_dims), tuple(self.space_heads),
                           tuple(float(r) for r in self.space_ffn_ratios), tuple(self.space_layers), self.head_dim)

    @property
    def subnet(self) -> Subnet:
        """The subnet the upstream runs (the space's largest when ``subnet_embed_dim`` is 0)."""
        if not self.subnet_embed_dim:
            return self.search_space.max()
        return Subnet(self.subnet_embed_dim, tuple(self.subnet_heads), tuple(self.subnet_ffn_dims))

    def with_subnet(self, subnet: Subnet) -> "LightHubertConfig":
        """A copy whose upstream runs ``subnet``."""
        from dataclasses import replace
        return replace(self, subnet_embed_dim=subnet.embed_dim, subnet_heads=subnet.heads,
                       subnet_ffn_dims=subnet.ffn_dims)

    def validate(self) -> None:
        super().validate()
        if "conv" not in self.encoder_position or len(self.encoder_position) != 1:
            raise ValueError(f"encoder_position must be ('conv',) for LightHuBERT, got {tuple(self.encoder_position)}")
        if self.encoder_layerdrop > 0:
            raise ValueError(f"encoder_layerdrop={self.encoder_layerdrop}: the LightHuBERT supernet has no layer drop "
                             "(subnet depth sampling replaces it); set it to 0")
        self.search_space.validate(self.encoder_embed_dim, self.encoder_ffn_embed_dim, self.encoder_layers,
                                   self.encoder_attention_heads, self.conv_pos_groups)
        if self.subnet_embed_dim and not (self.subnet_heads and len(self.subnet_heads) == len(self.subnet_ffn_dims)):
            raise ValueError("subnet_heads and subnet_ffn_dims must name the same layers when subnet_embed_dim is set")


def parse_subnet(spec: str | Mapping[str, Any] | Subnet, config: LightHubertConfig) -> Subnet:
    """A subnet from a spec: ``max``, ``min``, ``small``, ``base``, a JSON object or a mapping.

    Raises:
        ValueError: an unknown name or malformed mapping (naming the accepted forms).
    """
    if isinstance(spec, Subnet):
        return spec
    if isinstance(spec, str):
        name = spec.strip()
        if name == "max":
            return config.search_space.max()
        if name == "min":
            return config.search_space.min()
        if name in NAMED_SUBNETS:
            return NAMED_SUBNETS[name]
        if name.startswith("{"):
            return Subnet.from_dict(json.loads(name))
        raise ValueError(f"subnet {spec!r}: expected max, min, {', '.join(NAMED_SUBNETS)} or a JSON object "
                         '{"embed_dim": E, "heads": [...], "ffn_dims": [...]}')
    return Subnet.from_dict(dict(spec))


def _fairseq_base_trunk() -> dict[str, Any]:
    return dict(extractor_mode="default", conv_feature_layers=FAIRSEQ_CONV_LAYERS, encoder_layers=12,
                encoder_embed_dim=768, encoder_ffn_embed_dim=3072, encoder_attention_heads=12,
                dropout=0.1, attention_dropout=0.1, dropout_input=0.1, feature_grad_mult=0.1,
                mask_prob=0.8)


def tiny() -> LightHubertConfig:
    """A 128-wide, 3-layer supernet (2 heads of 64, FFN 512) with HuBERT tiny's conv stack, for CPU."""
    return LightHubertConfig(
        conv_feature_layers=((64, 10, 5),) + ((64, 3, 2),) * 4 + ((64, 2, 2),) * 2,
        encoder_layers=3, encoder_embed_dim=128, encoder_ffn_embed_dim=512, encoder_attention_heads=2,
        conv_pos=32, conv_pos_groups=8, dropout=0.1, attention_dropout=0.1, dropout_input=0.1,
        feature_grad_mult=0.1, mask_prob=0.5,
        space_embed_dims=(64, 128), space_heads=(1, 2), space_ffn_ratios=(3.0, 4.0), space_layers=(2, 3))


def small() -> LightHubertConfig:
    """LightHuBERT Small's search space on the 768-wide supernet (the official layout)."""
    return LightHubertConfig(**_fairseq_base_trunk(), space_embed_dims=(256, 384, 512), space_heads=(4, 6, 8),
                             space_ffn_ratios=(3.0, 3.5, 4.0), space_layers=(10, 11, 12))


def base() -> LightHubertConfig:
    """LightHuBERT Base's search space on the 768-wide supernet (the official layout)."""
    return LightHubertConfig(**_fairseq_base_trunk(), space_embed_dims=(512, 640, 768), space_heads=(8, 10, 12),
                             space_ffn_ratios=(3.5, 4.0), space_layers=(12,))


PRESETS: dict[str, Callable[[], LightHubertConfig]] = {"tiny": tiny, "small": small, "base": base}
