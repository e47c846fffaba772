"""SpeechT5 (Ao et al., 2022): one encoder-decoder for speech and text through modality pre/post-nets.

* :mod:`.config` — :class:`SpeechT5Config` and the ``tiny``/``base`` presets.
* :mod:`.model` — :class:`SpeechT5Model` (the upstream: encoder hidden states; decoder for generation).
* :mod:`.nets` — the text and speech pre/post-nets.
* :mod:`.pretrain` — :class:`SpeechT5PretrainModel` (unit head + cross-modal quantizer).
* :mod:`.task` — :class:`SpeechT5PretrainTask` (speech: units + mel reconstruction; text: BART denoising).
* :mod:`.convert` — transformers ``speecht5`` directories (``speechssl hub convert --from hf``).
* :mod:`.finetune` — ASR (speech → text) and TTS (text → log-mel) fine-tuning through the decoder
  (``speechssl speecht5 asr|tts``; ``recipes/speecht5/run.sh`` runs the whole pipeline).

Registered as the ``speecht5`` method through the ``speechssl.upstream`` entry point (``METHOD``).
"""
from speechssl.registry import Method
from speechssl.upstream.speecht5.config import PRESETS, SpeechT5Config
from speechssl.upstream.speecht5.convert import SpeechT5HFConverter
from speechssl.upstream.speecht5.example import write_example
from speechssl.upstream.speecht5.model import SpeechT5Model
from speechssl.upstream.speecht5.task import SpeechT5PretrainTask, SpeechT5TaskConfig

__all__ = ["SpeechT5Config", "SpeechT5Model", "SpeechT5PretrainTask", "SpeechT5TaskConfig", "PRESETS", "METHOD"]

METHOD = Method(
    name="speecht5",
    config_cls=SpeechT5Config,
    model_cls=SpeechT5Model,
    presets=PRESETS,
    task_cls=SpeechT5PretrainTask,
    task_config_cls=SpeechT5TaskConfig,
    modality="audio",
    input_kind="waveform",
    example=write_example,
    description="SpeechT5: shared encoder-decoder, speech + text pre/post-nets, joint pretraining",
    converters={"hf": SpeechT5HFConverter()},
)
