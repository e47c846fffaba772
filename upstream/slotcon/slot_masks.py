"""SlotCon's slot masks as an unsupervised segmentation, scored against reference masks.

Every patch of an image goes to its most similar prototype (:meth:`SlotConModel.slot_masks`,
SlotCon's ``viz_slots.py``: argmax over prototypes of the cosine with the projected map); the
``(h, w)`` prototype map is repeated (nearest) to the masks' pixels and compared with the
reference classes of ``<split>.<masks>.tsv`` (mask PNGs beside ``<split>.tsv``, classes in
``dict.<masks>.txt``, as ``speechssl corpus images`` writes them for ``scenes/`` and
``roads/``). Prototypes are matched to classes on the ``(C, K)`` pixel counts of the split
(:mod:`speechssl.cluster.segmentation`: Hungarian one-to-one and majority many-to-one), then
mIoU, pixel accuracy and per-class IoU.

Images are resized to the model's input with no normalisation (as the probes feed them: a
model pretrained with ``task.normalize=imagenet`` would need the same here).

The weights are the student's (a model directory or a training checkpoint: what
:func:`speechssl.hub.load` loads); ``weights="teacher"`` reads the EMA teacher out of a
training checkpoint (SlotCon visualises the teacher's masks).

Command line (one JSON object on stdout, optionally written to ``--out``)::

    python -m speechssl.upstream.slotcon.slot_masks -u MODEL --data CORPUS/scenes --split test
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F

from speechssl.atomic import atomic_write_text
from speechssl.cluster.segmentation import MATCHINGS, cluster_confusion, matched_segmentation_scores
from speechssl.corpus.image import read_mask
from speechssl.data.image import ImageDataset
from speechssl.data.manifest import FormatError, read_dict, validate_manifest
from speechssl.upstream.slotcon.model import SlotConModel

__all__ = ["load_slotcon", "predict_slot_masks", "slot_mask_confusion", "score_slot_masks", "main"]

_log = logging.getLogger(__name__)


def load_slotcon(path: str | Path, weights: Literal["student", "teacher"] = "student",
                 device: str | torch.device = "cpu") -> SlotConModel:
    """A :class:`SlotConModel` in eval mode: the student (what ``hub.load`` loads) or a checkpoint's teacher."""
    from speechssl import hub

    model = hub.load(path, device="cpu")  # verifies the checkpoint's digests
    if not isinstance(model, SlotConModel):
        raise ValueError(f"{path} holds a {type(model).__name__} ({getattr(model, 'method', '?')}), not a slotcon model")
    if weights == "teacher":
        if not Path(path).is_file():
            raise ValueError(f"weights=teacher needs a training checkpoint (checkpoint_last.pt); {path} is a model "
                             "directory, which holds the student only")
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
        teacher = {k[len("teacher."):]: v for k, v in state.items() if k.startswith("teacher.")}
        if not teacher:
            raise ValueError(f"{path}: no 'teacher.' weights in the checkpoint's model")
        model = SlotConModel(model.config)
        model.load_state_dict(teacher)
    elif weights != "student":
        raise ValueError(f"weights must be 'student' or 'teacher', got {weights!r}")
    return model.to(device).eval()


@torch.no_grad()
def predict_slot_masks(model: SlotConModel, images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``images (B, C, H, W)`` → ``(B, size_h, size_w)`` int64 prototype ids (nearest upsampling of the patch map)."""
    masks = model.slot_masks(images)  # (B, h, w)
    out = F.interpolate(masks[:, None].float(), size=(int(size[0]), int(size[1])), mode="nearest")
    return out[:, 0].long()


def _split_paths(data: Path, split: str, masks: str) -> tuple[Any, Any, list[str]]:
    manifest = validate_manifest(data / f"{split}.tsv")
    mask_manifest = validate_manifest(data / f"{split}.{masks}.tsv")
    if len(mask_manifest) != len(manifest):
        raise FormatError(f"{mask_manifest.source}: {len(mask_manifest)} masks for the {len(manifest)} images of "
                          f"{manifest.source}")
    for i, (image, mask) in enumerate(zip(manifest.paths, mask_manifest.paths)):
        if Path(mask).name.split(".")[0] != Path(image).stem:
            raise FormatError(f"{mask_manifest.source}:{i + 2}: mask {mask} is not the mask of image {image}")
    classes = read_dict(data / f"dict.{masks}.txt").symbols
    return manifest, mask_manifest, list(classes)


def slot_mask_confusion(model: SlotConModel, data: str | Path, split: str = "test", *, masks: str = "sem",
                        batch_size: int = 64, device: str | torch.device = "cpu") -> tuple[torch.Tensor, list[str]]:
    """``(C, K)`` pixel counts of reference class x prototype over ``data/<split>.tsv``, and the class names."""
    data = Path(data)
    manifest, mask_manifest, classes = _split_paths(data, split, masks)
    c, h, _ = model.input_shape
    images = ImageDataset(manifest, size=h, augment=False, crop_fraction=1.0, channels=c, check_files=True)
    conf = torch.zeros(len(classes), model.num_prototypes, dtype=torch.long)
    model = model.to(device).eval()
    for start in range(0, len(manifest), batch_size):
        rows = range(start, min(start + batch_size, len(manifest)))
        refs = [read_mask(mask_manifest.root / mask_manifest.paths[i]) for i in rows]
        if len({tuple(r.shape) for r in refs}) != 1:
            raise FormatError(f"{mask_manifest.source}: masks of rows {rows.start}..{rows.stop - 1} differ in size")
        ref = torch.stack(refs)  # (B, H, W)
        if int(ref.max()) >= len(classes):
            raise FormatError(f"{mask_manifest.source}: class id {int(ref.max())}, but dict.{masks}.txt lists "
                              f"{len(classes)} classes")
        batch = torch.stack([images[i]["image"] for i in rows]).to(device)
        pred = predict_slot_masks(model, batch, ref.shape[1:]).cpu()
        conf += cluster_confusion(pred, ref, model.num_prototypes, len(classes))
    return conf, classes


def score_slot_masks(model: SlotConModel, data: str | Path, split: str = "test", *, masks: str = "sem",
                     batch_size: int = 64, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Slot-mask mIoU of ``model`` on ``data/<split>`` under each matching of :data:`MATCHINGS`.

    Returns:
        ``{"split", "pixels", "classes", "num_prototypes", "<matching>": {miou, pixel_accuracy,
        iou_<class>..., clusters_used, clusters_matched}, ...}``.
    """
    conf, classes = slot_mask_confusion(model, data, split, masks=masks, batch_size=batch_size, device=device)
    out: dict[str, Any] = {"split": split, "pixels": int(conf.sum()), "classes": classes,
                           "num_prototypes": model.num_prototypes}
    for mode in MATCHINGS:
        out[mode] = matched_segmentation_scores(conf, mode, classes)  # type: ignore[arg-type]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m speechssl.upstream.slotcon.slot_masks``: see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m speechssl.upstream.slotcon.slot_masks",
                                description="score SlotCon's slot masks (argmax prototype per patch) against masks")
    p.add_argument("-u", "--upstream", required=True, help="slotcon model directory or training checkpoint")
    p.add_argument("--data", required=True, help="directory with <split>.tsv, <split>.<masks>.tsv, dict.<masks>.txt")
    p.add_argument("--split", default="test")
    p.add_argument("--masks", default="sem", help="mask manifest extension (<split>.<masks>.tsv)")
    p.add_argument("--weights", choices=("student", "teacher"), default="student",
                   help="teacher: the EMA teacher of a training checkpoint")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    from speechssl.log import setup_logging

    setup_logging()
    try:
        model = load_slotcon(args.upstream, args.weights)
        result = score_slot_masks(model, args.data, args.split, masks=args.masks)
    except (ValueError, FileNotFoundError, FormatError) as exc:
        p.exit(2, f"error: {exc}\n")
    result["upstream"], result["weights"] = str(args.upstream), args.weights
    text = json.dumps(result, sort_keys=True)
    if args.out is not None:
        atomic_write_text(args.out, text + "\n")
    _log.info("slot masks on %s/%s: hungarian mIoU %.4f, majority mIoU %.4f", args.data, args.split,
              result["hungarian"]["miou"], result["majority"]["miou"])
    sys.stdout.write(text + "\n")  # the command's result, for pipes
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
