"""What the stages of a detection run share: its settings, the detection set (read and checked
before anything is written), the decoded images, the run directory and the models."""

import os

import numpy as np
import tensorflow as tf
from absl import logging

import tfkd
from pipelines import workers
from pipelines.context import keep_model
from pipelines.run import RunDirectory
from tfkd.keras import keras
from tfkd.tasks.detection import data, metrics, models

# Offsets of the seed, as in classification (pipelines/context.py): the student alone and the
# distilled student start from the same weights and see the same batches.
TEACHER_DATA, STUDENT_DATA, QAD_DATA = 0, 1, 2
# Banners that say what the stage does for a detector where the shared table's words do not.
OWN_WORDS = {"verify": "COCO mAP of every .tflite (parity gate)"}


class DetectionContext:
    """The data, the run directory and the models of one detection run.

    The dataset's `val/` is the test set (as COCO's val2017 is); validation, which the teacher
    check and --select decide on, is --validation_fraction of `train/`."""

    def __init__(self, config, strategy: tf.distribute.Strategy | None = None):
        self.config = config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.chief = workers.is_chief(self.strategy)
        try:
            _, root = data.parse(config.dataset)
            if not os.path.exists(root):
                raise ValueError(
                    f"{root} does not exist. Fix: point --dataset at your COCO or YOLO set "
                    "(docs/detection.md), or build tfkd's generated set there first: "
                    f"python -m tools.make_detection_set --source=PATH/cifar10 --out={root} "
                    "(the detection recipe's full command heads pipelines/configs/detection.flags)."
                )
            found = data.load(config.dataset)
            if "val" not in found:
                raise ValueError(
                    "no val/ split: its images are the test set the report and the parity gate "
                    "measure on. Fix: add ROOT/val/ in the layout of ROOT/train/."
                )
            train, validation = data.split_off(
                found["train"], config.validation_fraction, config.seed
            )
        except ValueError as error:
            raise ValueError(f"--dataset={config.dataset}: {error}") from error
        for name, split in found.items():
            for problem, count in split.warnings.items():
                logging.warning("--dataset %s/: %d %s.", name, count, problem)
        self.splits = {"train": train, "validation": validation, "test": found["val"]}
        self.class_names = train.class_names
        self.image_size = int(config.image_size[0])
        self.preprocessing = models.preprocessing(self.image_size)
        self.anchors = models.anchors(self.image_size)
        self.representative_size = self._representative_size()
        self.teacher_file = self._load_teacher_file() if config.teacher_is_file else None
        self._check_weights()
        self.directory = RunDirectory(config.out_dir, writable=self.chief)
        self._images: dict[str, np.ndarray] = {}
        self._normalized: dict[str, np.ndarray] = {}
        self._targets: tuple[np.ndarray, np.ndarray] | None = None
        self._models: dict[str, keras.Model] = {}

    def _representative_size(self) -> int:
        """Calibration images of the int8 export: --representative_size training images; the
        default shrinks to a smaller training split, an explicit value must fit."""
        wanted, available = self.config.representative_size, len(self.splits["train"].images)
        if wanted <= available:
            return wanted
        if wanted != tfkd.export.DEFAULT_REPRESENTATIVE_SIZE:
            raise ValueError(
                f"--representative_size={wanted}: the training split has {available} images. "
                f"Fix: --representative_size={available} or fewer."
            )
        return available

    def sizes(self) -> dict[str, int]:
        return {name: len(split.images) for name, split in self.splits.items()}

    # Data -----------------------------------------------------------------------------------

    def images(self, split: str) -> np.ndarray:
        """The split's images as uint8 at the input size, decoded once."""
        if split not in self._images:
            self._images[split] = models.images(self.splits[split], self.image_size)
        return self._images[split]

    def normalized(self, split: str):
        """The split's images as the detectors take them, normalised once."""
        if split not in self._normalized:
            self._normalized[split] = self.preprocessing.normalize(self.images(split)).numpy()
        return self._normalized[split]

    def original_sizes(self, split: str) -> list[tuple[int, int]]:
        return [(image.width, image.height) for image in self.splits[split].images]

    def targets(self):
        """The anchors' training targets, assigned once for every training stage."""
        if self._targets is None:
            self._targets = models.training_targets(self.splits["train"], self.anchors)
        return self._targets

    def detections(self, model: keras.Model, split: str) -> list[metrics.Detections]:
        return models.detect(
            model, self.anchors, self.normalized(split), self.original_sizes(split)
        )

    def scores(self, model: keras.Model) -> dict:
        """COCO mAP@[.5:.95] and mAP@.5 of a Keras detector on the test and validation images."""
        test = metrics.coco_map(self.splits["test"], self.detections(model, "test"))
        validation = metrics.coco_map(
            self.splits["validation"], self.detections(model, "validation")
        )
        return {
            "map": test["map"],
            "map50": test["map50"],
            "val_map": validation["map"],
            "val_map50": validation["map50"],
        }

    # Models ---------------------------------------------------------------------------------

    def build(self, name: str, weights: str = "") -> keras.Model:
        """Detector `name` with `weights` (--teacher_weights or --student_weights; empty:
        random)."""
        return models.build(name, self.image_size, len(self.class_names), weights or None)[0]

    def build_teacher(self) -> keras.Model:
        return self.build(self.config.teacher, self.config.teacher_weights)

    def _load_teacher_file(self) -> keras.Model:
        """A trained detector from --teacher (safe mode, tfkd.models.load), checked to predict
        what this run's anchors and classes need: box encodings and class logits (background
        first) for each anchor of a detector `models.build` makes at --image_size."""
        path = self.config.teacher
        try:
            teacher = tfkd.models.load(path)
        except (ValueError, OSError) as error:
            raise ValueError(f"--teacher={path}: {error}") from error
        size, classes = self.image_size, len(self.class_names)
        expected = [(None, len(self.anchors), 4), (None, len(self.anchors), 1 + classes)]
        found = [tuple(output.shape) for output in teacher.outputs]
        if tuple(teacher.input_shape[1:]) != (size, size, 3) or found != expected:
            raise ValueError(
                f"--teacher={path} takes {teacher.input_shape[1:]} and predicts {found}; this "
                f"run needs ({size}, {size}, 3) in and {expected} out ({len(self.anchors)} "
                f"anchors, {classes} classes and the background). Fix: give a detector built by "
                "tfkd.tasks.detection.models.build at --image_size for these classes."
            )
        return teacher

    def fresh_student(self) -> keras.Model:
        keras.utils.set_random_seed(self.config.seed + STUDENT_DATA)
        return self.build(self.config.student, self.config.student_weights)

    def _check_weights(self) -> None:
        """Builds the detectors that start from weights once, so a failed download or a file
        of the wrong shapes is named before any training."""
        for role, build in (("teacher", self.build_teacher), ("student", self.fresh_student)):
            given = getattr(self.config, f"{role}_weights")
            if given:
                try:
                    build()
                except ValueError as error:
                    raise ValueError(f"--{role}_weights={given}: {error}") from error

    def model(self, name: str) -> keras.Model:
        if name not in self._models:
            # A QAT student is rebuilt on its bare architecture, then its weights loaded.
            self._models[name] = self.directory.load_model(
                name, lambda: self.build(self.config.student)
            )
        return self._models[name]

    def keep(self, name: str, model: keras.Model) -> str:
        """Saves `model` as the run's `name` (`pipelines.context.keep_model`); returns its path
        relative to the run directory. `model(name)` is then what was saved."""
        relative, self._models[name] = keep_model(
            self.directory, self.strategy, self.chief, name, model
        )
        return relative

    def drop_models(self) -> None:
        self._models.clear()

    def describe(self, stage) -> str:
        """A stage's banner text: what it does and, for training, on what."""
        if not stage.model:
            return OWN_WORDS.get(stage.name, stage.what)
        config = self.config
        if stage.model == "teacher" and self.teacher_file is not None:
            return f"load the teacher from {config.teacher}"
        architecture = config.teacher if stage.model == "teacher" else config.student
        train = self.splits["train"]
        return (
            f"{stage.what}: {architecture} at {self.image_size}x{self.image_size}, "
            f"{len(train.images):,} training images ({train.boxes:,} boxes), "
            f"{getattr(config, stage.epochs)} epoch(s)"
        )
