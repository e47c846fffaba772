"""BART text infilling (Lewis et al., 2020), SpeechT5's text pretraining corruption.

Exactly ``ceil(ratio · n)`` (SpeechT5: 30 %) of an item's ``n`` tokens are covered by disjoint
spans whose lengths are drawn from Poisson(``poisson_lambda``) (3.5), the last one trimmed, at
random places; each span becomes one ``<mask>`` token (``replace_length`` 1), a zero-length
span inserts one, and a fraction ``random_ratio``
(0.1) of those mask tokens is a random non-special token instead. The final ``eos`` is never
masked. The decoder reconstructs the original.

Randomness comes from one generator per item, seeded by ``(seed, epoch, index)``
(:func:`speechssl.data.base.item_generator`), so batches are identical after a resume.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from speechssl.data.base import SizedDataset, check_seed, item_generator
from speechssl.nn.lengths import pad_list

__all__ = ["text_infilling", "DenoisingTextDataset", "DenoisingCollater"]


def text_infilling(tokens: torch.Tensor, *, mask_id: int, generator: torch.Generator, ratio: float = 0.3,
                   poisson_lambda: float = 3.5, random_ratio: float = 0.1, vocab_size: int = 0,
                   num_specials: int = 4, eos_id: int | None = None) -> torch.Tensor:
    """Corrupt one item: ``tokens`` ``(L,)`` int64 → ``(L',)`` int64 (see the module docstring).

    Args:
        mask_id: the ``<mask>`` piece.
        generator: CPU generator of this item.
        ratio, poisson_lambda, random_ratio: BART's ``mask``, ``poisson_lambda``, ``mask_random``.
        vocab_size: random tokens are drawn from ``[num_specials, vocab_size)`` (0: no random tokens).
        eos_id: a final token with this id is kept (None: every token may be masked).
    """
    keep_last = eos_id is not None and len(tokens) > 0 and int(tokens[-1]) == eos_id
    body = tokens[:-1] if keep_last else tokens
    n = len(body)
    to_mask = int(math.ceil(ratio * n))
    if n == 0 or to_mask == 0:
        return tokens.clone()
    spans: list[int] = []
    while sum(spans) < to_mask:
        spans.extend(int(v) for v in torch.poisson(torch.full((8,), poisson_lambda), generator=generator))
    total = 0
    for cut, s in enumerate(spans):  # keep the prefix that reaches to_mask, trim its last span
        if total + s >= to_mask:
            spans = spans[:cut] + [to_mask - total]
            break
        total += s
    # disjoint placement: the n - to_mask kept tokens split into len(spans) + 1 random gaps
    free = n - to_mask
    cuts = sorted(torch.randint(0, free + 1, (len(spans),), generator=generator).tolist())
    gaps = [b - a for a, b in zip([0] + cuts, cuts + [free])]
    body_list = body.tolist()
    out: list[int] = []
    pos = 0
    for gap, length in zip(gaps, spans):
        out.extend(body_list[pos:pos + gap])
        out.append(-1)  # one mask token per span; a zero-length span inserts one
        pos += gap + length
    out.extend(body_list[pos:])
    result = torch.tensor(out, dtype=torch.long)
    holes = result == -1
    use_random = torch.rand(len(result), generator=generator) < random_ratio
    if vocab_size > num_specials:
        random_tokens = torch.randint(num_specials, vocab_size, (len(result),), generator=generator)
    else:
        random_tokens = torch.full((len(result),), mask_id, dtype=torch.long)
        use_random[:] = False
    result = torch.where(holes & use_random, random_tokens, torch.where(holes, torch.full_like(result, mask_id), result))
    if keep_last:
        result = torch.cat([result, tokens[-1:]])
    return result


class DenoisingTextDataset(SizedDataset):
    """A token dataset (items with ``"tokens"``, e.g. :class:`speechssl.data.text.TextDataset`) with
    BART-corrupted sources: items ``{"id", "index", "source" (L',), "target" (L,)}``.

    Args:
        base: the clean dataset (``sizes`` = tokens per item, ``set_epoch``).
        mask_id, ratio, poisson_lambda, random_ratio, vocab_size, eos_id: see :func:`text_infilling`.
        seed: base seed of the corruption.
    """

    def __init__(self, base: Any, *, mask_id: int, ratio: float = 0.3, poisson_lambda: float = 3.5,
                 random_ratio: float = 0.1, vocab_size: int = 0, eos_id: int | None = None, seed: int = 0) -> None:
        if not 0.0 <= ratio < 1.0 or poisson_lambda <= 0 or not 0.0 <= random_ratio <= 1.0:
            raise ValueError(f"text noise needs 0 <= ratio < 1, poisson_lambda > 0, 0 <= random_ratio <= 1; got "
                             f"{ratio}, {poisson_lambda}, {random_ratio}")
        self.base = base
        self.sizes = base.sizes
        self.kw = dict(mask_id=mask_id, ratio=ratio, poisson_lambda=poisson_lambda, random_ratio=random_ratio,
                       vocab_size=vocab_size, eos_id=eos_id)
        self.seed = check_seed(seed)
        self.epoch = 1

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.base[index]
        target = item["tokens"]
        source = text_infilling(target, generator=item_generator(self.seed, self.epoch, index), **self.kw)
        return {"id": item.get("id", str(index)), "index": int(index), "source": source, "target": target}


class DenoisingCollater:
    """Batch: ``src_tokens (B, L')``, ``src_lengths``, ``tokens (B, L)`` (targets), ``lengths``, ``id``, ``index``."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = int(pad_id)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty list of items")
        src, src_len = pad_list([it["source"] for it in items], self.pad_id)
        tgt, tgt_len = pad_list([it["target"] for it in items], self.pad_id)
        return {"id": [it["id"] for it in items], "index": torch.tensor([it["index"] for it in items]),
                "src_tokens": src.long(), "src_lengths": src_len, "tokens": tgt.long(), "lengths": tgt_len}
