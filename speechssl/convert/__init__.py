"""Converters between speechssl model directories and other toolkits' checkpoints.

- :mod:`speechssl.convert.safe_load`: the allow-listed ``torch.load(weights_only=True)`` every
  ``.pt`` goes through.
- :mod:`speechssl.convert.fairseq`: fairseq checkpoints → speechssl, for methods that register a
  :class:`~speechssl.convert.fairseq.FairseqConverter` (the trunk's key table lives there).
- :mod:`speechssl.convert.hf`: Hugging Face model directories, both ways, for methods that
  register an ``"hf"`` converter.
- :mod:`speechssl.convert.trunk_hf`: the transformers ↔ speechssl mapping of the wav2vec 2.0 /
  HuBERT trunk (:class:`~speechssl.convert.trunk_hf.TrunkHFConverter`).

Methods register converters as ``Method.converters[format]``; nothing here lists methods.
The user-facing entry points are :func:`speechssl.hub.convert` and ``speechssl hub convert``.
"""
