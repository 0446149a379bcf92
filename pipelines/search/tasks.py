"""What a search asks the task of its base run (classification or detection): the quality a
trial is scored by, where the model card holds it, the input its latency is measured on, and how
an untrained candidate is exported for the latency floor."""

import functools
import os
from collections.abc import Callable

import numpy as np

import tfkd
from pipelines import config as config_lib
from pipelines.config import Config
from pipelines.search import space
from tfkd.tasks.detection import data as detection_data
from tfkd.tasks.detection import export as detection_export
from tfkd.tasks.detection import models as detectors

# Each task's quality objective (named in reports by `pipelines.search.report.QUALITY_WORDS`).
TASK_QUALITY = {config_lib.CLASSIFICATION: "accuracy", config_lib.DETECTION: "map"}
# Images an untrained candidate's int8 export calibrates on: its latency is all that is measured.
FLOOR_REPRESENTATIVE = 16

Exporter = Callable[[str, str, str], str]


def quality(base: Config) -> str:
    """The objective a trial of `base` is scored by: a classifier's top-1 accuracy, a
    detector's COCO mAP@[.5:.95]."""
    return TASK_QUALITY[base.task]


def quality_in_card(entry: dict, metric: str) -> float:
    """A model card variant's test `metric` (the verify stage writes both kinds)."""
    return entry["accuracy"]["value"] if metric == "accuracy" else entry["map"]["map"]


def latency_inputs(base: Config) -> np.ndarray | None:
    """What a file is fed while the search measures its latency (the floor's candidates, the
    shipped files measured again): a detector the first test image, as its run's benchmark stage
    did (the post-processing's work depends on what the detector finds); a classifier, whose
    work does not depend on its input, random data."""
    if base.task != config_lib.DETECTION:
        return None
    return _first_images(_detection_set(base.dataset)["val"], base, 1)


@functools.lru_cache(maxsize=1)
def _detection_set(spec: str) -> dict[str, detection_data.DetectionSplit]:
    """The base run's detection set, read once per search (its annotations and every image's
    header) for both the latency inputs and the latency floor's calibration images."""
    return detection_data.load(spec)


def _first_images(split: detection_data.DetectionSplit, base: Config, count: int) -> np.ndarray:
    """The first `count` images of a detection split, normalised as the detectors take them."""
    head = detection_data.DetectionSplit(split.images[:count], split.class_names)
    size = int(base.image_size[0])
    return detectors.preprocessing(size).normalize(detectors.images(head, size)).numpy()


def floor_exporter(base: Config, size: str) -> Exporter:
    """How the latency floor exports an untrained candidate of `base`'s task at resolution
    `size` (as the space spells it): `export(student, mode, directory)` returns the file's
    path."""
    if base.task == config_lib.DETECTION:
        return _untrained_detector(base, _detection_set(base.dataset)["train"])
    at_size = space.trial_config(base, {"image_size": size})
    splits = tfkd.data.load(
        base.dataset,
        data_dir=base.data_dir,
        seed=base.seed,
        image_size=at_size.student_size,
        resize=base.resize,
        cache=base.data_cache,
    )

    def export(student: str, mode: str, directory: str) -> str:
        model = tfkd.models.build(student, splits.preprocessing.input_shape, splits.num_classes)
        representative = (
            tfkd.export.representative_set(splits, max(FLOOR_REPRESENTATIVE, splits.num_classes))
            if mode in tfkd.export.INTEGER_MODES
            else None
        )
        card = tfkd.export.export(
            model,
            directory,
            [mode],
            preprocessing=splits.preprocessing,
            class_names=splits.class_names,
            representative=representative,
            name=student,
        )
        return os.path.join(directory, card["variants"][f"{student}_{mode}"]["file"])

    return export


def _untrained_detector(base: Config, train: detection_data.DetectionSplit) -> Exporter:
    size = int(base.image_size[0])
    representative = _first_images(train, base, FLOOR_REPRESENTATIVE)

    def export(student: str, mode: str, directory: str) -> str:
        model, anchors = detectors.build(student, size, len(train.class_names))
        path = os.path.join(directory, f"{student}_{mode}.tflite")
        content = detection_export.convert(
            model,
            anchors,
            train.class_names,
            detectors.preprocessing(size),
            mode,
            representative if mode != "float32" else None,
            name=student,
        )
        tfkd.export.write_tflite(path, content)
        return path

    return export
