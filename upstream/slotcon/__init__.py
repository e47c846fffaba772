"""SlotCon (Wen, Zhao and Qi, NeurIPS 2022): slots from learnable prototypes, an EMA teacher, a grouping loss
and a slot contrastive loss.

* :mod:`.config` — :class:`SlotConConfig` (ViT or ResNet backbone, projector, prototypes, slot
  predictor) and the ``tiny``/``tiny_resnet``/``small`` presets.
* :mod:`.model` — :class:`SlotConModel` (the upstream: backbone + projector + prototypes) and
  :class:`SlotConPretrainModel` (+ EMA teacher, predictor, teacher centre).
* :mod:`.task` — :class:`SlotConTask` and :class:`SlotConTaskConfig` (overlapping views,
  cross-view grouping loss, slot InfoNCE, EMA with a cosine momentum).
* :mod:`.slot_masks` — every patch's prototype as an unsupervised segmentation, scored against
  mask manifests by mIoU after matching prototypes to classes.

Registered as the ``slotcon`` method through the ``speechssl.upstream`` entry point (``METHOD``).
"""
from speechssl.registry import Method
from speechssl.upstream.slotcon.config import PRESETS, SlotConConfig
from speechssl.upstream.slotcon.example import write_example
from speechssl.upstream.slotcon.model import SlotConModel, SlotConPretrainModel
from speechssl.upstream.slotcon.task import SlotConTask, SlotConTaskConfig

__all__ = ["SlotConConfig", "SlotConModel", "SlotConPretrainModel", "SlotConTask", "SlotConTaskConfig", "PRESETS",
           "METHOD"]

METHOD = Method(
    name="slotcon",
    config_cls=SlotConConfig,
    model_cls=SlotConModel,
    presets=PRESETS,
    task_cls=SlotConTask,
    task_config_cls=SlotConTaskConfig,
    description="SlotCon: prototype slots, EMA teacher, cross-view grouping loss + slot contrast (ViT or ResNet)",
    modality="image",
    input_kind="image",
    example=write_example,
)
