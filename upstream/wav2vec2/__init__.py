"""wav2vec 2.0 upstream (inference and conversion; shares HuBERT's architecture)."""
from speechssl.convert.fairseq import FairseqConverter
from speechssl.convert.trunk_hf import TrunkHFConverter
from speechssl.registry import Method
from speechssl.upstream.wav2vec2.config import PRESETS, Wav2Vec2Config
from speechssl.upstream.wav2vec2.model import Wav2Vec2Model

__all__ = ["METHOD", "Wav2Vec2Config", "Wav2Vec2Model"]

METHOD = Method(
    name="wav2vec2",
    config_cls=Wav2Vec2Config,
    model_cls=Wav2Vec2Model,
    presets=dict(PRESETS),
    description="wav2vec 2.0 upstream (HuBERT's conv encoder + transformer); load/convert fairseq and "
                "Hugging Face checkpoints; no pretraining task",
    converters={"hf": TrunkHFConverter(Wav2Vec2Config, ["wav2vec2"]),
                "fairseq": FairseqConverter(Wav2Vec2Config, {"wav2vec2": False, "wav2vec_ctc": True})},
)
