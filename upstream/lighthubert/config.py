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

Subnet specs (:func:`parse_subnet`; what ``hub.load(path, subnet=...)``, ``-u PATH@SPEC`` and
``speechssl hub export/convert/info --subnet`` take):

* ``max`` (alias ``largest``), ``min`` (``smallest``): every dimension at the space's largest / smallest;
* ``small``, ``base``: the official released subnets (384 dims, 6 heads, FFN 1536, 12 layers /
  640, 10, 2560, 12), where the search space holds them;
* ``embed=E,heads=H,ffn=R,layers=L`` (:func:`speechssl.nn.supernet.parse_spec`): a field left out
  takes the space's largest value; ``heads`` / ``ffn`` (FFN ratio) take one value or one per layer
  joined by ``:`` (``heads=4:6:8:...``);
* a JSON object ``{"embed_dim": E, "heads": [...], "ffn_dims": [...]}`` (absolute FFN widths).

Every subnet must lie in the search space; a bad spec is a one-line ValueError naming the
field and the values it may take.

An *extracted* subnet (``layer_heads`` / ``layer_ffn_dims`` set; :meth:`LightHubertModel.extract_subnet`,
``speechssl hub export --subnet``) is a standalone model of width ``E``: its layers have their own
heads and FFN widths, it holds only that subnet's weights, and it runs only that subnet.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from speechssl.nn.conv_extractor import FAIRSEQ_CONV_LAYERS
from speechssl.nn.supernet import SearchSpace, Subnet, format_spec, parse_spec
from speechssl.nn.trunk import TrunkConfig

__all__ = ["LightHubertConfig", "tiny", "small", "base", "PRESETS", "parse_subnet", "NAMED_SUBNETS", "SUBNET_NAMES"]

#: the subnets the official LightHuBERT release names (lighthubert_small.pt / lighthubert_base.pt)
NAMED_SUBNETS: dict[str, Subnet] = {
    "small": Subnet.uniform(384, 6, 4.0, 12),
    "base": Subnet.uniform(640, 10, 4.0, 12),
}

#: every named subnet spec (the official ones and the space's extremes)
SUBNET_NAMES = ("max", "largest", "min", "smallest") + tuple(NAMED_SUBNETS)


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
    layer_heads: tuple[int, ...] = ()  # an extracted subnet: each layer's heads (empty: a supernet)
    layer_ffn_dims: tuple[int, ...] = ()  # an extracted subnet: each layer's FFN width

    @property
    def is_extracted(self) -> bool:
        """True for a standalone subnet (``layer_heads`` set), which runs only :attr:`subnet`."""
        return bool(self.layer_heads)

    @property
    def search_space(self) -> SearchSpace:
        return SearchSpace(tuple(self.space_embed_dims), tuple(self.space_heads),
                           tuple(float(r) for r in self.space_ffn_ratios), tuple(self.space_layers), self.head_dim)

    @property
    def subnet(self) -> Subnet:
        """The subnet the upstream runs (an extracted model's own; else the space's largest when
        ``subnet_embed_dim`` is 0)."""
        if self.is_extracted:
            return Subnet(self.encoder_embed_dim, tuple(self.layer_heads), tuple(self.layer_ffn_dims))
        if not self.subnet_embed_dim:
            return self.search_space.max()
        return Subnet(self.subnet_embed_dim, tuple(self.subnet_heads), tuple(self.subnet_ffn_dims))

    def extracted(self, subnet: Subnet) -> "LightHubertConfig":
        """The config of the standalone model of ``subnet`` (width ``E``, ``L'`` layers of their own sizes).

        Its search space lists the subnet's own values (the ratios are the space's that it uses).
        """
        E = subnet.embed_dim
        ratios = tuple(sorted({r for r in self.search_space.ffn_ratios for f in subnet.ffn_dims if int(r * E) == f}))
        return replace(self, encoder_embed_dim=E, encoder_layers=subnet.num_layers,
                       encoder_attention_heads=max(subnet.heads), encoder_ffn_embed_dim=max(subnet.ffn_dims),
                       layer_heads=subnet.heads, layer_ffn_dims=subnet.ffn_dims, space_embed_dims=(E,),
                       space_heads=tuple(sorted(set(subnet.heads))), space_ffn_ratios=ratios,
                       space_layers=(subnet.num_layers,), subnet_embed_dim=0, subnet_heads=(), subnet_ffn_dims=())

    def with_subnet(self, subnet: Subnet) -> "LightHubertConfig":
        """A copy whose upstream runs ``subnet``."""
        return replace(self, subnet_embed_dim=subnet.embed_dim, subnet_heads=subnet.heads,
                       subnet_ffn_dims=subnet.ffn_dims)

    def validate(self) -> None:
        if self.is_extracted:
            self._validate_extracted()
            return
        if self.layer_ffn_dims:
            raise ValueError("layer_ffn_dims is set but layer_heads is empty: an extracted subnet sets both")
        super().validate()
        self._validate_common()
        self.search_space.validate(self.encoder_embed_dim, self.encoder_ffn_embed_dim, self.encoder_layers,
                                   self.encoder_attention_heads, self.conv_pos_groups)
        if self.subnet_embed_dim and not (self.subnet_heads and len(self.subnet_heads) == len(self.subnet_ffn_dims)):
            raise ValueError("subnet_heads and subnet_ffn_dims must name the same layers when subnet_embed_dim is set")

    def _validate_extracted(self) -> None:
        # the trunk's checks, but heads need not divide the width (A = 64 H per layer)
        TrunkConfig.validate(replace(self, encoder_attention_heads=1))
        self._validate_common()
        L = self.encoder_layers
        if not len(self.layer_heads) == len(self.layer_ffn_dims) == L:
            raise ValueError(f"an extracted subnet's layer_heads ({len(self.layer_heads)}) and layer_ffn_dims "
                             f"({len(self.layer_ffn_dims)}) must name all encoder_layers ({L})")
        if self.subnet_embed_dim or self.subnet_heads or self.subnet_ffn_dims:
            raise ValueError("an extracted subnet (layer_heads set) runs only itself: leave subnet_* empty")
        if (max(self.layer_heads) != self.encoder_attention_heads
                or max(self.layer_ffn_dims) != self.encoder_ffn_embed_dim):
            raise ValueError("an extracted subnet's encoder_attention_heads / encoder_ffn_embed_dim must be the "
                             "largest of layer_heads / layer_ffn_dims")
        if min(self.layer_heads) < 1 or min(self.layer_ffn_dims) < 1:
            raise ValueError("layer_heads and layer_ffn_dims must be >= 1")

    def _validate_common(self) -> None:
        if "conv" not in self.encoder_position or len(self.encoder_position) != 1:
            raise ValueError(f"encoder_position must be ('conv',) for LightHuBERT, got {tuple(self.encoder_position)}")
        if self.encoder_layerdrop > 0:
            raise ValueError(f"encoder_layerdrop={self.encoder_layerdrop}: the LightHuBERT supernet has no layer drop "
                             "(subnet depth sampling replaces it); set it to 0")


def parse_subnet(spec: str | Mapping[str, Any] | Subnet, config: LightHubertConfig) -> Subnet:
    """The subnet of ``config``'s search space a spec names (the forms in the module docstring).

    An extracted subnet's config accepts ``max``/``min`` (and the names and specs that equal its
    own subnet) and refuses every other.

    Raises:
        ValueError: one line naming the spec, the field at fault and the values it may take.
    """
    if config.is_extracted:
        try:
            subnet = parse_subnet(spec, replace(config, layer_heads=(), layer_ffn_dims=()))
        except ValueError:
            subnet = None
        if subnet != config.subnet and not (isinstance(spec, str) and spec.strip() in SUBNET_NAMES[:4]):
            raise ValueError(f"subnet {spec if isinstance(spec, str) else format_spec(spec)!r}: this model is the "
                             f"extracted subnet {format_spec(config.subnet)} and runs only that (max/min); load "
                             "its supernet to choose another")
        return config.subnet
    space = config.search_space
    if isinstance(spec, Subnet):
        subnet, name = spec, format_spec(spec)
    elif isinstance(spec, str):
        name = spec.strip()
        if name in ("max", "largest"):
            return space.max()
        if name in ("min", "smallest"):
            return space.min()
        if name in NAMED_SUBNETS:
            subnet = NAMED_SUBNETS[name]
            name = f"{name} ({format_spec(subnet)}, the official LightHuBERT {name.capitalize()} subnet)"
        elif name.startswith("{"):
            try:
                subnet = Subnet.from_dict(json.loads(name))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"subnet {spec!r}: not a subnet JSON object {{\"embed_dim\": E, \"heads\": [...], "
                                 f"\"ffn_dims\": [...]}}: {exc}") from None
        elif "=" in name:
            subnet = parse_spec(name, space)
        else:
            raise ValueError(f"subnet {spec!r}: expected {', '.join(SUBNET_NAMES)}, field=value pairs "
                             f"(embed=E,heads=H,ffn=R,layers=L) or a JSON object")
    else:
        try:
            subnet = Subnet.from_dict(dict(spec))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"subnet {dict(spec)!r}: expected embed_dim, heads, ffn_dims: {exc}") from None
        name = format_spec(subnet)
    space.check(subnet, name)
    return subnet


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
