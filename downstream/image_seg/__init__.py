"""image_seg — per-patch linear segmentation probe of a frozen image upstream, scored by mIoU.

Embedded corpus (``speechssl corpus images``): ``task.subset=roads`` (default: the aerial road
scenes, classes terrain road marking vehicle tree building) or ``task.subset=scenes`` (the
object masks: background + the six shapes); images ``<split>.tsv`` and semantic masks
``<split>.sem.tsv`` (8-bit PNG ids of ``dict.sem.txt``) beside them. Images are resized to the
upstream's input size; masks are scored at their own resolution.

Model: the upstream's hidden states ``(B, T, D)`` → the featurizer (learned softmax-weighted sum
of layers, or ``featurizer.layer=N``; standardised with training statistics) → the patch tokens
(class token dropped) on the upstream's ``patch_grid`` → one linear layer per patch →
logits ``(B, K, H_p, W_p)`` upsampled bilinearly to the mask's ``H x W`` pixels → cross-entropy
per pixel. ``-u pixels``: the raw pixels cut into ``task.pixel_patch`` patches (default 4, the
patch of the tiny ViT presets) are the tokens. Features are cached like speech features
(``cache.enabled``). Metric: ``miou`` (mean IoU over the classes present in the reference or
the prediction; higher is better), with ``pixel_accuracy``, ``iou_<class>`` and the
majority-class ``chance_miou`` / ``chance_pixel_accuracy`` beside it.
"""
from speechssl.downstream.image_seg.task import ImageSeg, ImageSegConfig, ImageSegModel, PatchSegmentationHead
from speechssl.registry import DownstreamTask

__all__ = ["TASK", "ImageSegConfig", "ImageSeg", "ImageSegModel", "PatchSegmentationHead"]

TASK = DownstreamTask(
    name="image_seg", task_cls=ImageSeg, config_cls=ImageSegConfig, metric="miou", higher_is_better=True,
    description="image segmentation probe: linear head per patch token, upsampled to pixels (road scenes or "
                "object masks), mIoU",
    modality="image")
