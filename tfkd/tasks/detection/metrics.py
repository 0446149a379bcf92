"""COCO mAP of detections against a `DetectionSplit`, computed by pycocotools (the reference
implementation; never a hand-written mAP)."""

import contextlib
import copy
import dataclasses
import io
from collections.abc import Sequence

import numpy as np

from tfkd.tasks.detection.data import DetectionSplit


@dataclasses.dataclass(frozen=True)
class Detections:
    """What a detector found in one image: `boxes` (n, 4) pixel corners x_min, y_min, x_max,
    y_max; `classes` (n,) class indices; `scores` (n,) confidences."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray


def _xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _evaluated(truth: DetectionSplit, found: Sequence[Detections]):
    """COCOeval after its per-image matching (`evaluate`), or None when there is nothing to
    match (no detection or no box at all)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(found) != len(truth.images):
        raise ValueError(
            f"`found` has {len(found)} entries for {len(truth.images)} images: give one "
            "Detections per image, in order."
        )
    annotations: list[dict] = []
    results: list[dict] = []
    for image_id, (image, detected) in enumerate(zip(truth.images, found), 1):
        for box, label in zip(_xywh(image.boxes), image.classes):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
        for box, label, score in zip(_xywh(detected.boxes), detected.classes, detected.scores):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [float(v) for v in box],
                    "score": float(score),
                }
            )
    if not results or not annotations:
        return None
    ground = COCO()
    ground.dataset = {
        "images": [
            {"id": i, "width": image.width, "height": image.height}
            for i, image in enumerate(truth.images, 1)
        ],
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in enumerate(truth.class_names, 1)],
    }
    # pycocotools prints its progress; the numbers are returned instead.
    with contextlib.redirect_stdout(io.StringIO()):
        ground.createIndex()
        evaluation = COCOeval(ground, ground.loadRes(results), "bbox")
        evaluation.evaluate()
    return evaluation


def _scores(evaluation) -> dict[str, float]:
    if evaluation is None:
        return {"map": 0.0, "map50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.accumulate()
        evaluation.summarize()
    # A category without ground truth scores -1 in COCOeval; no category at all: nothing found.
    return {
        "map": max(0.0, float(evaluation.stats[0])),
        "map50": max(0.0, float(evaluation.stats[1])),
    }


def coco_map(truth: DetectionSplit, found: Sequence[Detections]) -> dict[str, float]:
    """mAP@[.5:.95] (`map`) and mAP@.5 (`map50`) of `found`, one `Detections` per image of
    `truth` in its order, as COCOeval computes them (101-point interpolation, at most 100
    detections per image, areas from the boxes)."""
    return _scores(_evaluated(truth, found))


def _resampled_map(evaluation, pick: np.ndarray) -> float:
    """mAP of the images at positions `pick` (repeats allowed) of an evaluated COCOeval, equal
    to `coco_map` of that resampled split: COCOeval matches each image on its own, so only
    its accumulation over images runs again, on the per-image results laid out as
    `accumulate` indexes them (category, area range, image)."""
    if evaluation is None:
        return 0.0
    params = evaluation._paramsEval
    images, areas = len(params.imgIds), len(params.areaRng)
    resampled = copy.copy(evaluation)
    resampled.evalImgs = [
        evaluation.evalImgs[(k * areas + a) * images + int(i)]
        for k in range(len(params.catIds))
        for a in range(areas)
        for i in pick
    ]
    ids = list(range(len(pick)))
    resampled.params = copy.copy(evaluation.params)
    resampled.params.imgIds = ids
    resampled._paramsEval = copy.copy(params)
    resampled._paramsEval.imgIds = ids
    return _scores(resampled)["map"]


def paired_map_difference(
    truth: DetectionSplit,
    a: Sequence[Detections],
    b: Sequence[Detections],
    resamples: int = 200,
    seed: int = 0,
) -> dict:
    """mAP of `a` minus mAP of `b` on the same images, with a 95% percentile interval from
    `resamples` bootstrap resamplings of the images (both sides resampled alike: a paired test;
    mAP does not split into per-image terms, so McNemar's test does not apply). `better`: the
    interval lies above 0 (`a` better beyond noise), `worse`: below, else `within noise`."""
    if resamples < 1:
        raise ValueError(f"`resamples` must be >= 1. Received: {resamples}")
    count = len(truth.images)
    rng = np.random.default_rng(seed)
    evaluated_a, evaluated_b = _evaluated(truth, a), _evaluated(truth, b)
    differences = []
    for _ in range(resamples):
        pick = rng.integers(0, count, count)
        differences.append(_resampled_map(evaluated_a, pick) - _resampled_map(evaluated_b, pick))
    low, high = (float(v) for v in np.percentile(differences, [2.5, 97.5]))
    difference = _scores(evaluated_a)["map"] - _scores(evaluated_b)["map"]
    verdict = "better" if low > 0 else "worse" if high < 0 else "within noise"
    return {
        "difference": difference,
        "interval": [low, high],
        "verdict": verdict,
        "resamples": resamples,
        "images": count,
    }
