"""w2v-BERT (Chung et al., ASRU 2021): contrastive learning and masked language modelling on a conformer.

* :mod:`.config` — :class:`W2vBertConfig` and the ``tiny``/``base``/``600m`` presets.
* :mod:`.model` — :class:`W2vBertModel` (the upstream, w2v-BERT 2.0 layout) and :class:`W2vBertPretrainModel`.
* :mod:`.task` — :class:`W2vBertPretrainTask` and :class:`W2vBertTaskConfig`.
* :mod:`.hf` — conversion to and from transformers ``Wav2Vec2BertModel`` (the ``"hf"`` converter).

Registered as the ``w2v_bert`` method through the ``speechssl.upstream`` entry point (``METHOD``).
"""
from speechssl.registry import Method
from speechssl.upstream.w2v_bert.config import PRESETS, W2vBertConfig
from speechssl.upstream.w2v_bert.example import write_example
from speechssl.upstream.w2v_bert.hf import CONVERTER
from speechssl.upstream.w2v_bert.model import W2vBertModel, W2vBertPretrainModel
from speechssl.upstream.w2v_bert.task import W2vBertPretrainTask, W2vBertTaskConfig

__all__ = ["W2vBertConfig", "W2vBertModel", "W2vBertPretrainModel", "W2vBertPretrainTask", "W2vBertTaskConfig",
           "PRESETS", "METHOD"]

METHOD = Method(
    name="w2v_bert",
    config_cls=W2vBertConfig,
    model_cls=W2vBertModel,
    presets=PRESETS,
    task_cls=W2vBertPretrainTask,
    example=write_example,
    task_config_cls=W2vBertTaskConfig,
    modality="audio",
    input_kind="waveform",
    description="w2v-BERT: contrastive + masked code prediction on a conformer over stacked fbank",
    converters={"hf": CONVERTER},
)
