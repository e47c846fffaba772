"""Weight-sharing transformer supernet (LightHuBERT's once-for-all encoder).

A supernet is a wav2vec 2.0 / HuBERT transformer (:mod:`speechssl.nn.transformer` layout and
parameter names) whose every layer can run on a *slice* of its weights. A :class:`Subnet`
names the slice: one embedding width ``E`` for the whole encoder and, for each kept layer, a
number of attention heads ``H_l`` (``head_dim`` = 64 dims each) and an FFN width ``F_l``.
:class:`SearchSpace` lists the allowed values and samples subnets uniformly from an explicit
``torch.Generator``.

Slicing rules (those of the official LightHuBERT code, mechanicalsea/lighthubert):

* every ``E``-sized dimension (inputs of q/k/v and fc1, outputs of out_proj and fc2, the
  LayerNorms, the mask embedding, the input projection) is the prefix ``[:E]``;
* attention uses the first ``H_l`` heads: q/k/v output rows and out_proj input columns
  ``[:64 * H_l]``; scores are scaled by ``64 ** -0.5`` whatever ``H_l``;
* the FFN's hidden units are split into ``F_full / D`` chunks of ``D`` units (``D`` the supernet
  width); a subnet of width ``E`` and ratio ``r = F_l / E`` takes the first ``E`` units of
  each of the first ``ceil(r)`` chunks, the last chunk cut to ``F_l - i E`` units
  (:func:`ffn_units`); the full width ``F_l = F_full`` is the plain prefix;
* the convolutional position embedding is computed from the full weight-normalised kernel,
  then sliced to ``[:E, :E / G]`` and run with the same ``G`` groups;
* depth: a subnet of ``L' < L`` layers runs the layers of :func:`depth_map` (for the 12-layer
  supernet: the official table, dropping the last layer of each block of four first, the
  last block's first; e.g. 10 layers drop layers 8 and 12, 1-based).

A subnet's config ``Subnet.heads[i]`` / ``ffn_dims[i]`` apply to the ``i``-th *kept* layer.

Standalone subnets: :meth:`SupernetEncoder.extract` copies a subnet's slices into the state
dict of a :class:`SupernetEncoder` of width ``E`` whose layers have their own heads and FFN
widths (``layer_heads`` / ``layer_ffn_dims``); that encoder, run whole, computes what the
supernet computes when it runs the subnet. The position convolution's kernel is stored already
normalised (``weight_v`` = the supernet's sliced effective kernel, ``weight_g = ||weight_v||``)
and run as stored (``stored_pos_kernel``): renormalising it would round differently (~1e-9),
and the standalone model would no longer equal the supernet exactly.

Subnet specs (:func:`parse_spec` / :func:`format_spec`): comma-separated ``field=value`` with
fields ``embed`` (``E``), ``heads`` (per layer), ``ffn`` (FFN ratio ``F_l / E`` per layer) and
``layers`` (``L'``); a per-layer field is one value for every layer or ``L'`` values joined by
``:``; a field left out takes the search space's largest value, e.g. ``embed=256,heads=4,ffn=3,layers=10``
or ``embed=64,heads=1:2,ffn=3:4``. Every value must be one of the search space's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from speechssl.nn.activations import get_activation
from speechssl.nn.attention import attend
from speechssl.nn.lengths import padding_mask as make_padding_mask
from speechssl.nn.pos_conv import ConvPositionalEmbedding
from speechssl.nn.transformer import init_bert_params

__all__ = ["Subnet", "SearchSpace", "depth_map", "ffn_units", "parse_spec", "format_spec", "SPEC_FIELDS",
           "SupernetLayer", "SupernetEncoder"]


@dataclass(frozen=True)
class Subnet:
    """One sub-network of a supernet.

    Attributes:
        embed_dim: ``E``, the width of every hidden state.
        heads: attention heads of each kept layer (``len`` = number of layers ``L'``).
        ffn_dims: FFN inner width of each kept layer.
    """

    embed_dim: int
    heads: tuple[int, ...]
    ffn_dims: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
        object.__setattr__(self, "ffn_dims", tuple(int(f) for f in self.ffn_dims))
        if len(self.heads) != len(self.ffn_dims) or not self.heads:
            raise ValueError(f"subnet: heads ({len(self.heads)}) and ffn_dims ({len(self.ffn_dims)}) must name "
                             "the same number (>= 1) of layers")

    @property
    def num_layers(self) -> int:
        return len(self.heads)

    def to_dict(self) -> dict[str, Any]:
        return {"embed_dim": self.embed_dim, "heads": list(self.heads), "ffn_dims": list(self.ffn_dims)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Subnet":
        unknown = set(d) - {"embed_dim", "heads", "ffn_dims"}
        if unknown:
            raise ValueError(f"subnet: unknown field(s) {sorted(unknown)}; expected embed_dim, heads, ffn_dims")
        return cls(int(d["embed_dim"]), tuple(d["heads"]), tuple(d["ffn_dims"]))

    @classmethod
    def uniform(cls, embed_dim: int, heads: int, ffn_ratio: float, num_layers: int) -> "Subnet":
        """Every layer alike: ``heads`` heads and an FFN of ``int(ffn_ratio * embed_dim)``."""
        return cls(embed_dim, (heads,) * num_layers, (int(ffn_ratio * embed_dim),) * num_layers)


@dataclass(frozen=True)
class SearchSpace:
    """The values a subnet may take (LightHuBERT's search spaces).

    Attributes:
        embed_dims: allowed ``E``.
        heads: allowed heads per layer.
        ffn_ratios: allowed ``F_l / E`` per layer.
        layers: allowed numbers of layers.
        head_dim: dims per head (64 in LightHuBERT).
    """

    embed_dims: tuple[int, ...]
    heads: tuple[int, ...]
    ffn_ratios: tuple[float, ...]
    layers: tuple[int, ...]
    head_dim: int = 64

    def validate(self, dim: int, ffn_dim: int, num_layers: int, num_heads: int, conv_pos_groups: int) -> None:
        """Raise ValueError naming the field when the space does not fit the supernet's sizes."""
        for name in ("embed_dims", "heads", "ffn_ratios", "layers"):
            if not getattr(self, name):
                raise ValueError(f"search space: {name} is empty")
        if num_heads * self.head_dim != dim:
            raise ValueError(f"supernet: encoder_attention_heads ({num_heads}) x head_dim ({self.head_dim}) must equal "
                             f"encoder_embed_dim ({dim})")
        if ffn_dim % dim:
            raise ValueError(f"supernet: encoder_ffn_embed_dim ({ffn_dim}) must be a multiple of encoder_embed_dim ({dim})")
        if max(self.embed_dims) > dim or any(e % conv_pos_groups for e in self.embed_dims):
            raise ValueError(f"search space: embed_dims {self.embed_dims} must be <= {dim} and divisible by "
                             f"conv_pos_groups ({conv_pos_groups})")
        if max(self.heads) > num_heads or min(self.heads) < 1:
            raise ValueError(f"search space: heads {self.heads} must be in 1..{num_heads}")
        if max(self.layers) > num_layers or min(self.layers) < 1:
            raise ValueError(f"search space: layers {self.layers} must be in 1..{num_layers}")
        for e in self.embed_dims:
            for r in self.ffn_ratios:
                if not 0 < int(r * e) <= ffn_dim or r > ffn_dim // dim:
                    raise ValueError(f"search space: ffn_ratio {r} x embed_dim {e} does not fit encoder_ffn_embed_dim "
                                     f"{ffn_dim} (at most {ffn_dim // dim} chunks of {dim})")

    def max(self) -> Subnet:
        """The largest subnet (every dimension at its maximum)."""
        return Subnet.uniform(max(self.embed_dims), max(self.heads), max(self.ffn_ratios), max(self.layers))

    def min(self) -> Subnet:
        """The smallest subnet."""
        return Subnet.uniform(min(self.embed_dims), min(self.heads), min(self.ffn_ratios), min(self.layers))

    def sample(self, generator: torch.Generator) -> Subnet:
        """A subnet drawn uniformly: depth, width, then heads and FFN ratio of each layer."""

        def pick(values: Sequence[Any]) -> Any:
            return values[int(torch.randint(len(values), (), generator=generator))]

        num_layers = pick(self.layers)
        e = pick(self.embed_dims)
        ffn = tuple(int(pick(self.ffn_ratios) * e) for _ in range(num_layers))
        heads = tuple(pick(self.heads) for _ in range(num_layers))
        return Subnet(e, heads, ffn)

    def contains(self, subnet: Subnet) -> bool:
        """Whether ``subnet`` is one of this space's subnets."""
        ratios = {int(r * subnet.embed_dim) for r in self.ffn_ratios}
        return (subnet.embed_dim in self.embed_dims and subnet.num_layers in self.layers
                and all(h in self.heads for h in subnet.heads) and all(f in ratios for f in subnet.ffn_dims))

    def allowed(self, field: str) -> str:
        """The values spec field ``field`` (:data:`SPEC_FIELDS`) may take, as text (``"256, 384, 512"``)."""
        values = {"embed": self.embed_dims, "heads": self.heads, "ffn": self.ffn_ratios, "layers": self.layers}[field]
        return ", ".join(f"{v:g}" for v in sorted(values))

    def check(self, subnet: Subnet, name: str = "") -> None:
        """Raise ValueError naming the spec field (and its allowed values) when ``subnet`` is not in the space.

        Args:
            name: how the message names the subnet (default its :func:`format_spec`).
        """
        name = name or format_spec(subnet)
        E = subnet.embed_dim

        def fail(field: str, value: str) -> None:
            raise ValueError(f"subnet {name!r}: {field}={value} is not in the search space; {field} may be "
                             f"{self.allowed(field)}")

        if E not in self.embed_dims:
            fail("embed", str(E))
        if subnet.num_layers not in self.layers:
            fail("layers", str(subnet.num_layers))
        for h in subnet.heads:
            if h not in self.heads:
                fail("heads", str(h))
        dims = {int(r * E): r for r in self.ffn_ratios}
        for f in subnet.ffn_dims:
            if f not in dims:
                fail("ffn", f"{f / E:g} (FFN width {f} at embed {E})")


def depth_map(total: int, keep: int) -> list[int]:
    """Indices (0-based) of the layers a ``keep``-layer subnet of a ``total``-layer supernet runs.

    With ``total`` divisible by 3 the layers form three equal blocks and layers are dropped from
    the end of each block, last block first (for 12 layers: the official LightHuBERT table,
    11 → drop 12; 10 → drop 8, 12; 9 → drop 4, 8, 12; ...). Otherwise the last layers are dropped.
    """
    if not 1 <= keep <= total:
        raise ValueError(f"subnet: {keep} layers is not in 1..{total}")
    blocks = 3 if total % 3 == 0 else 1
    size = total // blocks
    order = [b * size + size - 1 - j for j in range(size) for b in reversed(range(blocks))]
    dropped = set(order[: total - keep])
    return [i for i in range(total) if i not in dropped]


def ffn_units(dim: int, ffn_dim: int, embed_dim: int, sub_ffn: int) -> torch.Tensor:
    """Indices of the FFN hidden units a layer of width ``embed_dim`` and FFN ``sub_ffn`` uses.

    Args:
        dim, ffn_dim: the supernet's width ``D`` and FFN width ``F_full`` (``F_full / D`` chunks).
        embed_dim, sub_ffn: the subnet's ``E`` and ``F_l``.

    Returns:
        ``(F_l,)`` int64 indices into the ``F_full`` hidden units (see the module docstring).
    """
    if sub_ffn == ffn_dim:
        return torch.arange(ffn_dim)
    chunks = math.ceil(sub_ffn / embed_dim)
    if chunks > ffn_dim // dim:
        raise ValueError(f"subnet: FFN {sub_ffn} at width {embed_dim} needs {chunks} chunks, the supernet has "
                         f"{ffn_dim // dim}")
    parts = [i * dim + torch.arange(min(embed_dim, sub_ffn - i * embed_dim)) for i in range(chunks)]
    return torch.cat(parts)


#: the fields of a subnet spec (see the module docstring)
SPEC_FIELDS = ("embed", "heads", "ffn", "layers")


def _spec_values(text: str, field: str, kind: type, spec: str) -> list[Any]:
    try:
        values = [kind(v) for v in text.split(":")]
    except ValueError:
        raise ValueError(f"subnet {spec!r}: {field}={text!r} is not {'an integer' if kind is int else 'a number'}"
                         + (" or values joined by ':'" if field in ("heads", "ffn") else "")) from None
    if len(values) > 1 and field in ("embed", "layers"):
        raise ValueError(f"subnet {spec!r}: {field} takes one value, got {text!r}")
    return values


def parse_spec(spec: str, space: SearchSpace) -> Subnet:
    """The subnet a ``field=value,...`` spec names (grammar in the module docstring), checked against ``space``.

    Raises:
        ValueError: one line naming the spec, the field and the values it may take.
    """
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, eq, value = part.strip().partition("=")
        key = key.strip()
        if not eq or not value.strip():
            raise ValueError(f"subnet {spec!r}: expected field=value pairs separated by ',' with fields "
                             f"{', '.join(SPEC_FIELDS)}, got {part.strip()!r}")
        if key not in SPEC_FIELDS:
            raise ValueError(f"subnet {spec!r}: unknown field {key!r}; fields are {', '.join(SPEC_FIELDS)}")
        if key in fields:
            raise ValueError(f"subnet {spec!r}: field {key!r} given twice")
        fields[key] = value.strip()
    embed = _spec_values(fields["embed"], "embed", int, spec)[0] if "embed" in fields else max(space.embed_dims)
    heads = _spec_values(fields["heads"], "heads", int, spec) if "heads" in fields else [max(space.heads)]
    ratios = _spec_values(fields["ffn"], "ffn", float, spec) if "ffn" in fields else [max(space.ffn_ratios)]
    per_layer = {len(v) for v in (heads, ratios) if len(v) > 1}
    if "layers" in fields:
        layers = _spec_values(fields["layers"], "layers", int, spec)[0]
    elif per_layer:
        layers = per_layer.pop()
    else:
        layers = max(space.layers)
    if layers not in space.layers:
        raise ValueError(f"subnet {spec!r}: layers={layers} is not in the search space; layers may be "
                         f"{space.allowed('layers')}")
    for field, values in (("heads", heads), ("ffn", ratios)):
        if len(values) not in (1, layers):
            raise ValueError(f"subnet {spec!r}: {field} has {len(values)} values for {layers} layers; give one "
                             f"value or {layers} joined by ':'")
    if embed not in space.embed_dims:
        raise ValueError(f"subnet {spec!r}: embed={embed} is not in the search space; embed may be "
                         f"{space.allowed('embed')}")
    for h in heads:
        if h not in space.heads:
            raise ValueError(f"subnet {spec!r}: heads={h} is not in the search space; heads may be "
                             f"{space.allowed('heads')}")
    for r in ratios:
        if not any(math.isclose(r, a) for a in space.ffn_ratios):
            raise ValueError(f"subnet {spec!r}: ffn={r:g} is not in the search space; ffn may be "
                             f"{space.allowed('ffn')}")
    heads = heads * layers if len(heads) == 1 else heads
    ratios = ratios * layers if len(ratios) == 1 else ratios
    subnet = Subnet(embed, tuple(heads), tuple(int(r * embed) for r in ratios))
    space.check(subnet, spec)
    return subnet


def format_spec(subnet: Subnet) -> str:
    """``subnet`` as a spec ``embed=E,heads=H,ffn=R,layers=L`` (per-layer values joined by ``:`` when they differ)."""
    E = subnet.embed_dim

    def join(values: Sequence[Any]) -> str:
        values = [f"{v:g}" for v in values]
        return values[0] if len(set(values)) == 1 else ":".join(values)

    return (f"embed={E},heads={join(subnet.heads)},ffn={join([f / E for f in subnet.ffn_dims])},"
            f"layers={subnet.num_layers}")


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm, e: int) -> torch.Tensor:
    return F.layer_norm(x, (e,), norm.weight[:e], norm.bias[:e], norm.eps)


class _SlicedSelfAttention(nn.Module):
    """fairseq-named q/k/v/out projections, run on their first ``H`` heads and ``E`` input dims.

    ``num_heads`` heads of ``head_dim`` (default ``dim / num_heads``): the projections are
    ``dim → num_heads * head_dim`` and back.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float, head_dim: int | None = None) -> None:
        super().__init__()
        self.head_dim = head_dim or dim // num_heads
        self.num_heads = num_heads
        self.dropout = dropout
        A = num_heads * self.head_dim
        self.k_proj = nn.Linear(dim, A)
        self.v_proj = nn.Linear(dim, A)
        self.q_proj = nn.Linear(dim, A)
        self.out_proj = nn.Linear(A, dim)

    def forward(self, x: torch.Tensor, heads: int, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        """``x``: ``(B, T, E)`` → ``(B, T, E)`` through ``heads`` heads."""
        B, T, E = x.shape
        A = heads * self.head_dim

        def proj(lin: nn.Linear) -> torch.Tensor:
            y = F.linear(x, lin.weight[:A, :E], lin.bias[:A])
            return y.view(B, T, heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

        y = attend(proj(self.q_proj), proj(self.k_proj), proj(self.v_proj), key_padding_mask,
                   dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, A)  # (B, T, A)
        return F.linear(y, self.out_proj.weight[:E, :A], self.out_proj.bias[:E])


class SupernetLayer(nn.Module):
    """A post-LN or pre-LN transformer layer that runs on a slice of its weights.

    Parameter names equal :class:`speechssl.nn.transformer.TransformerEncoderLayer`'s (fairseq's).

    Args:
        dim, ffn_dim, num_heads: the supernet's ``D``, ``F_full`` and heads.
        dropout, attention_dropout, activation_dropout, activation_fn, layer_norm_first,
        layer_norm_eps: as :class:`~speechssl.nn.transformer.TransformerEncoderLayer`.
        head_dim: dims per head (default ``dim / num_heads``).
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, *, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0, activation_fn: str = "gelu",
                 layer_norm_first: bool = False, layer_norm_eps: float = 1e-5, head_dim: int | None = None) -> None:
        super().__init__()
        self.dim, self.ffn_dim = dim, ffn_dim
        self.layer_norm_first = layer_norm_first
        self.self_attn = _SlicedSelfAttention(dim, num_heads, attention_dropout, head_dim)
        self.num_heads, self.head_dim = num_heads, self.self_attn.head_dim
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(activation_dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = get_activation(activation_fn)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)

    def _ffn(self, x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        E = x.shape[-1]
        if units.numel() == self.ffn_dim:
            w1, b1, w2 = self.fc1.weight[:, :E], self.fc1.bias, self.fc2.weight[:E]
        else:
            units = units.to(x.device)
            w1, b1, w2 = self.fc1.weight[units, :E], self.fc1.bias[units], self.fc2.weight[:E, units]
        h = self.dropout2(self.activation(F.linear(x, w1, b1)))
        return self.dropout3(F.linear(h, w2, self.fc2.bias[:E]))

    def forward(self, x: torch.Tensor, heads: int, sub_ffn: int,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, T, E)``, ``heads`` / ``sub_ffn`` of this layer, ``key_padding_mask`` ``(B, T)`` → ``(B, T, E)``."""
        E = x.shape[-1]
        units = ffn_units(self.dim, self.ffn_dim, E, sub_ffn)
        if self.layer_norm_first:
            x = x + self.dropout1(self.self_attn(_layer_norm(x, self.self_attn_layer_norm, E), heads, key_padding_mask))
            x = x + self._ffn(_layer_norm(x, self.final_layer_norm, E), units)
        else:
            x = _layer_norm(x + self.dropout1(self.self_attn(x, heads, key_padding_mask)), self.self_attn_layer_norm, E)
            x = _layer_norm(x + self._ffn(x, units), self.final_layer_norm, E)
        return x


class SupernetEncoder(nn.Module):
    """Convolutional position embedding + ``num_layers`` :class:`SupernetLayer` s, run as a :class:`Subnet`.

    Parameter names equal :class:`speechssl.nn.transformer.TransformerEncoder`'s with
    ``position="conv"`` (``pos_conv.0.weight_g``, ``layers.{i}.fc1``, ``layer_norm``).

    Args:
        dim, ffn_dim, num_layers, num_heads: the supernet's sizes.
        dropout, attention_dropout, activation_dropout, activation_fn, layer_norm_first,
        layer_norm_eps, conv_pos, conv_pos_groups: as :class:`~speechssl.nn.transformer.TransformerEncoder`.
        head_dim: dims per head (default ``dim / num_heads``).
        layer_heads, layer_ffn_dims: each layer's own heads and FFN width (an extracted subnet,
            :meth:`extract`); None: ``num_heads`` and ``ffn_dim`` in every layer.
        stored_pos_kernel: the position convolution runs ``weight_v`` as stored, the effective
            kernel :meth:`extract` wrote (``weight_g`` then only records its norm); False: weight norm.
    """

    def __init__(self, dim: int, ffn_dim: int, num_layers: int, num_heads: int, *, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0, activation_fn: str = "gelu",
                 layer_norm_first: bool = False, layer_norm_eps: float = 1e-5, conv_pos: int = 128,
                 conv_pos_groups: int = 16, head_dim: int | None = None,
                 layer_heads: Sequence[int] | None = None, layer_ffn_dims: Sequence[int] | None = None,
                 stored_pos_kernel: bool = False) -> None:
        super().__init__()
        self.stored_pos_kernel = stored_pos_kernel
        layer_heads = list(layer_heads) if layer_heads else [num_heads] * num_layers
        layer_ffn_dims = list(layer_ffn_dims) if layer_ffn_dims else [ffn_dim] * num_layers
        if not len(layer_heads) == len(layer_ffn_dims) == num_layers:
            raise ValueError(f"supernet: layer_heads ({len(layer_heads)}) and layer_ffn_dims ({len(layer_ffn_dims)}) "
                             f"must name every one of the {num_layers} layers")
        self.dim, self.ffn_dim, self.num_heads = dim, max(layer_ffn_dims), max(layer_heads)
        self.head_dim = head_dim or dim // num_heads
        self.layer_norm_first = layer_norm_first
        self.pos_conv = ConvPositionalEmbedding(dim, conv_pos, conv_pos_groups)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList([
            SupernetLayer(dim, f, h, dropout=dropout, attention_dropout=attention_dropout,
                          activation_dropout=activation_dropout, activation_fn=activation_fn,
                          layer_norm_first=layer_norm_first, layer_norm_eps=layer_norm_eps, head_dim=self.head_dim)
            for h, f in zip(layer_heads, layer_ffn_dims)
        ])
        self.layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.layers.apply(init_bert_params)

    def check(self, subnet: Subnet) -> None:
        """Raise ValueError when ``subnet`` does not fit this supernet."""
        if not 1 <= subnet.embed_dim <= self.dim or subnet.embed_dim % self.pos_conv[0].groups:
            raise ValueError(f"subnet: embed_dim {subnet.embed_dim} must be in 1..{self.dim} and divisible by "
                             f"{self.pos_conv[0].groups} (the position convolution's groups)")
        kept = depth_map(len(self.layers), subnet.num_layers)
        for i, h, f in zip(kept, subnet.heads, subnet.ffn_dims):
            layer = self.layers[i]
            if not 1 <= h <= layer.num_heads:
                raise ValueError(f"subnet: {h} heads is not in 1..{layer.num_heads} (layer {i + 1})")
            if not 1 <= f <= layer.ffn_dim:
                raise ValueError(f"subnet: ffn {f} is not in 1..{layer.ffn_dim} (layer {i + 1})")
            ffn_units(self.dim, layer.ffn_dim, subnet.embed_dim, f)

    @torch.no_grad()
    def extract(self, subnet: Subnet) -> dict[str, torch.Tensor]:
        """The state dict of a standalone encoder that computes ``subnet``.

        That encoder is ``SupernetEncoder(E, max(ffn_dims), L', max(heads), head_dim=self.head_dim,
        layer_heads=subnet.heads, layer_ffn_dims=subnet.ffn_dims, stored_pos_kernel=True, ...)``;
        run whole, it gives this encoder's hidden states for ``subnet``. Tensors are fresh copies on
        the weights' device.
        """
        self.check(subnet)
        E = subnet.embed_dim
        conv = self.pos_conv[0]
        kernel = (conv.weight_v if self.stored_pos_kernel else conv.weight)[:E, : E // conv.groups].detach().clone()
        out: dict[str, torch.Tensor] = {
            "pos_conv.0.weight_v": kernel,
            "pos_conv.0.weight_g": kernel.norm(dim=[d for d in range(3) if d != conv.dim], keepdim=True),
        }
        if conv.bias is not None:
            out["pos_conv.0.bias"] = conv.bias[:E].clone()
        for j, (i, h, f) in enumerate(zip(depth_map(len(self.layers), subnet.num_layers), subnet.heads,
                                          subnet.ffn_dims)):
            layer, p = self.layers[i], f"layers.{j}."
            A = h * layer.head_dim
            attn = layer.self_attn
            for name in ("k_proj", "v_proj", "q_proj"):
                lin = getattr(attn, name)
                out[p + f"self_attn.{name}.weight"] = lin.weight[:A, :E].clone()
                out[p + f"self_attn.{name}.bias"] = lin.bias[:A].clone()
            out[p + "self_attn.out_proj.weight"] = attn.out_proj.weight[:E, :A].clone()
            out[p + "self_attn.out_proj.bias"] = attn.out_proj.bias[:E].clone()
            units = ffn_units(self.dim, layer.ffn_dim, E, f).to(layer.fc1.weight.device)
            out[p + "fc1.weight"] = layer.fc1.weight[units, :E].clone()
            out[p + "fc1.bias"] = layer.fc1.bias[units].clone()
            out[p + "fc2.weight"] = layer.fc2.weight[:E, units].clone()
            out[p + "fc2.bias"] = layer.fc2.bias[:E].clone()
            for name in ("self_attn_layer_norm", "final_layer_norm"):
                norm = getattr(layer, name)
                out[p + f"{name}.weight"] = norm.weight[:E].clone()
                out[p + f"{name}.bias"] = norm.bias[:E].clone()
        out["layer_norm.weight"] = self.layer_norm.weight[:E].clone()
        out["layer_norm.bias"] = self.layer_norm.bias[:E].clone()
        return out

    def _position(self, x: torch.Tensor) -> torch.Tensor:
        """Sliced conv position embedding of ``x`` ``(B, T, E)`` (padded frames zero) → ``(B, T, E)``."""
        conv, same_pad, act = self.pos_conv
        E = x.shape[-1]
        kernel = conv.weight_v if self.stored_pos_kernel else conv.weight
        weight = kernel[:E, : E // conv.groups]
        bias = None if conv.bias is None else conv.bias[:E]
        y = F.conv1d(x.transpose(1, 2), weight.to(x.dtype), bias, padding=conv.padding, groups=conv.groups)
        return act(same_pad(y)).transpose(1, 2)

    def forward(self, x: torch.Tensor, subnet: Subnet, lengths: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Encode frames with one subnet.

        Args:
            x: ``(B, T, E)`` frames, ``E = subnet.embed_dim``.
            subnet: the slice to run.
            lengths: ``(B,)`` valid frames (None: nothing padded).

        Returns:
            ``[h_0, ..., h_L']`` each ``(B, T, E)``, padded frames 0, with the conventions of
            :meth:`speechssl.nn.transformer.TransformerEncoder.forward` (``h_0``: input of the
            first layer; pre-LN: the last is after the final LayerNorm).
        """
        if x.dim() != 3 or x.shape[-1] != subnet.embed_dim:
            raise ValueError(f"expected frames (B, T, {subnet.embed_dim}), got {tuple(x.shape)}")
        E = subnet.embed_dim
        pad = None if lengths is None else make_padding_mask(lengths, x.shape[1])
        if pad is not None:
            x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        x = x + self._position(x)
        if not self.layer_norm_first:
            x = _layer_norm(x, self.layer_norm, E)
        x = self.dropout(x)
        hidden = [x]
        kept = depth_map(len(self.layers), subnet.num_layers)
        for j, i in enumerate(kept):
            x = self.layers[i](x, subnet.heads[j], subnet.ffn_dims[j], pad)
            if self.layer_norm_first and j == len(kept) - 1:
                x = _layer_norm(x, self.layer_norm, E)
            hidden.append(x)
        if pad is not None:
            hidden = [h.masked_fill(pad.unsqueeze(-1), 0.0) for h in hidden]
        return hidden

    def num_macs(self, subnet: Subnet, frames: int) -> int:
        """Multiply-accumulates of one forward of ``subnet`` over ``frames`` frames (matmuls and the position conv)."""
        E, T = subnet.embed_dim, int(frames)
        conv = self.pos_conv[0]
        total = T * E * (E // conv.groups) * conv.kernel_size
        for h, f in zip(subnet.heads, subnet.ffn_dims):
            A = h * self.head_dim
            total += 4 * T * E * A + 2 * T * T * A + 2 * T * E * f
        return total

    def num_params(self, subnet: Subnet) -> int:
        """Parameters ``subnet`` uses (position conv, kept layers, final LayerNorm)."""
        E = subnet.embed_dim
        conv = self.pos_conv[0]
        total = E * (E // conv.groups) * conv.kernel_size + E + 2 * E
        for h, f in zip(subnet.heads, subnet.ffn_dims):
            A = h * self.head_dim
            total += 3 * (E * A + A) + (A * E + E) + (E * f + f) + (f * E + E) + 4 * E
        return total
