"""image_seg_unsup — unsupervised segmentation: k-means over a frozen image upstream's patch features, mIoU
after Hungarian matching of the clusters to the classes.

Embedded corpus (``speechssl corpus images``): ``task.subset=roads`` (default: the aerial road
scenes — UAV road parsing — classes terrain road marking vehicle tree building) or
``task.subset=scenes`` (the object masks); images ``<split>.tsv``, semantic masks
``<split>.sem.tsv`` and ``dict.sem.txt`` beside them. Nothing is trained and no label is used to
form the segments: the patch tokens of one hidden state (``featurizer.layer=N`` / ``-l N``;
default the last) of the training images are standardised with their own statistics,
L2-normalised (``task.normalize``) and clustered by :func:`speechssl.cluster.fit_kmeans`
(``task.clusters``, default one cluster per class); the patches of an evaluated image are scored
against the centroids, the score maps upsampled bilinearly to the mask's pixels and each pixel
given its best cluster. ``-u pixels``: the raw pixels cut into ``task.pixel_patch`` patches are
the tokens. Metric: ``miou`` after the Hungarian matching of clusters to classes over the
evaluated split (:func:`speechssl.cluster.segmentation.matched_segmentation_scores`), with ``pixel_accuracy``,
``iou_<class>``, ``miou_train_matching`` (the matching found on the training split instead) and
the majority-class ``chance_miou`` beside it.
"""
from speechssl.downstream.image_seg_unsup.task import ImageSegUnsup, ImageSegUnsupConfig
from speechssl.registry import DownstreamTask

__all__ = ["TASK", "ImageSegUnsup", "ImageSegUnsupConfig"]

TASK = DownstreamTask(
    name="image_seg_unsup", task_cls=ImageSegUnsup, config_cls=ImageSegUnsupConfig, metric="miou",
    higher_is_better=True,
    description="unsupervised segmentation: k-means over frozen patch features, Hungarian-matched to the classes "
                "(road scenes or object masks), mIoU",
    modality="image")
