r"""Trains a teacher, a student alone (baseline) and a distilled student; prints their accuracy.

    python -m pipelines.distill --flagfile=pipelines/configs/digits.flags --out_dir=runs/digits

Flags are validated before any training. The run directory receives `flags.txt` (re-runnable
with --flagfile), the three models as `.keras` files and `results.json`.
"""

import dataclasses
import json
import os
import time
from typing import Optional

from absl import app, flags, logging

import tensorflow as tf

import tfkd
from tfkd import files
from tfkd.evaluate import keras_accuracy
from tfkd.keras import keras

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "digits", "digits, folder:PATH or tfds:NAME.")
flags.DEFINE_string("data_dir", None, "Where tfds datasets live.")
flags.DEFINE_string("teacher", "cnn_large", "Teacher: a registered model name.")
flags.DEFINE_string("student", "cnn_small", "Student: a registered model name.")
flags.DEFINE_integer("teacher_epochs", 30, "Epochs of teacher training.")
flags.DEFINE_integer("student_epochs", 30, "Epochs of the baseline and of distillation.")
flags.DEFINE_integer("batch_size", 64, "Global batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Peak Adam learning rate (cosine decay to 0).")
flags.DEFINE_float("temperature", 4.0, "KD temperature (> 0).")
flags.DEFINE_float("student_loss_weight", 0.1, "Weight of the hard-label loss, in [0, 1].")
flags.DEFINE_bool("flip", False, "Random horizontal flip in training (natural images only).")
flags.DEFINE_integer("pad_crop", 0, "Random pad-and-crop by this many pixels in training; 0 = off.")
flags.DEFINE_integer("seed", 0, "Seed of data splits, shuffling and initialisation.")
flags.DEFINE_string("out_dir", "runs/default", "Run directory.")
flags.DEFINE_bool("jit_compile", False, "Compile training steps with XLA.")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run depends on; written to the run directory."""

    dataset: str = "digits"
    data_dir: Optional[str] = None
    teacher: str = "cnn_large"
    student: str = "cnn_small"
    teacher_epochs: int = 30
    student_epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    temperature: float = 4.0
    student_loss_weight: float = 0.1
    flip: bool = False
    pad_crop: int = 0
    seed: int = 0
    out_dir: str = "runs/default"
    jit_compile: bool = False

    def validate(self) -> None:
        """Raises `ValueError` naming the first bad setting and its fix."""
        for name in ("teacher", "student"):
            if getattr(self, name) not in tfkd.models.available():
                raise ValueError(
                    f"--{name}={getattr(self, name)} is not a registered model. "
                    f"Available: {tfkd.models.available()}"
                )
        for name in ("teacher_epochs", "student_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1. Received: {getattr(self, name)}")
        if self.pad_crop < 0:
            raise ValueError(f"--pad_crop must be >= 0 (0 turns it off). Received: {self.pad_crop}")
        if not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be > 0. Received: {self.learning_rate}")
        # The loss and Distiller validate their own arguments; building them here fails fast.
        tfkd.losses.KD(self.temperature)
        if not 0.0 <= self.student_loss_weight <= 1.0:
            raise ValueError(
                "--student_loss_weight must be in [0, 1]. "
                f"Received: {self.student_loss_weight}"
            )


def _optimizer(config: Config, steps: int) -> keras.optimizers.Optimizer:
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, max(steps, 1))
    return keras.optimizers.Adam(schedule)


def _save(model: keras.Model, path: str) -> None:
    with files.atomic_path(path) as tmp:
        model.save(tmp)


def train_classifier(model, train, validation, epochs: int, config: Config) -> keras.Model:
    """Trains `model` on hard labels alone (the teacher, and the student baseline)."""
    steps = epochs * int(train.cardinality())
    model.compile(
        optimizer=_optimizer(config, steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=config.jit_compile,
    )
    model.fit(train, validation_data=validation, epochs=epochs, verbose=2)
    return model


def distill(student, teacher, train, validation, config: Config) -> keras.Model:
    """Trains `student` against the frozen `teacher`; returns the student."""
    distiller = tfkd.Distiller(
        student=student,
        teacher=teacher,
        loss=tfkd.losses.KD(config.temperature),
        student_loss_weight=config.student_loss_weight,
    )
    steps = config.student_epochs * int(train.cardinality())
    distiller.compile(
        optimizer=_optimizer(config, steps), metrics=["accuracy"], jit_compile=config.jit_compile
    )
    distiller.fit(train, validation_data=validation, epochs=config.student_epochs, verbose=2)
    return distiller.student


def run(config: Config) -> dict:
    """Runs the whole job and returns test accuracies by model."""
    config.validate()
    os.makedirs(config.out_dir, exist_ok=True)
    files.write_text(
        os.path.join(config.out_dir, "config.json"),
        json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True),
    )
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    splits = tfkd.data.load(config.dataset, data_dir=config.data_dir, seed=config.seed)
    augmentation = (
        tfkd.data.Augmentation(flip=config.flip, pad_crop=config.pad_crop)
        if config.flip or config.pad_crop
        else None
    )

    def batches(ds, training):
        return tfkd.data.batches(
            ds, splits.preprocessing, config.batch_size, shuffle=training,
            augmentation=augmentation if training else None, seed=config.seed,
        )

    train, validation = batches(splits.train, True), batches(splits.validation, False)
    test = batches(splits.test, False)
    shape, classes = splits.preprocessing.input_shape, splits.num_classes

    results = {}
    timings = {}

    def record(name, model, started):
        results[name] = keras_accuracy(model, test)
        timings[name] = time.time() - started
        _save(model, os.path.join(config.out_dir, name, f"{name}.keras"))
        logging.info("%s: test accuracy %.4f (%.0f s)", name, results[name], timings[name])

    started = time.time()
    teacher = tfkd.models.build(config.teacher, shape, classes)
    record("teacher", train_classifier(teacher, train, validation, config.teacher_epochs, config),
           started)

    started = time.time()
    keras.utils.set_random_seed(config.seed + 1)
    baseline = tfkd.models.build(config.student, shape, classes)
    initial_student_weights = baseline.get_weights()
    record("baseline", train_classifier(baseline, train, validation, config.student_epochs, config),
           started)

    started = time.time()
    keras.utils.set_random_seed(config.seed + 1)
    student = tfkd.models.build(config.student, shape, classes)
    # Same initialisation as the baseline, so the comparison isolates distillation.
    student.set_weights(initial_student_weights)
    record("student", distill(student, teacher, train, validation, config), started)

    summary = {"dataset": splits.name, "test_accuracy": results, "seconds": timings}
    files.write_text(
        os.path.join(config.out_dir, "results.json"), json.dumps(summary, indent=2, sort_keys=True)
    )
    return summary


def _config_from_flags() -> Config:
    return Config(**{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(Config)})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _config_from_flags()
    try:
        config.validate()
    except (ValueError, TypeError) as error:
        raise app.UsageError(str(error)) from error
    os.makedirs(config.out_dir, exist_ok=True)
    files.write_text(os.path.join(config.out_dir, "flags.txt"), FLAGS.flags_into_string())
    summary = run(config)
    accuracy = summary["test_accuracy"]
    print(f"\nDataset {summary['dataset']} - test accuracy (CPU run)")
    for name, label in (("teacher", f"teacher  ({config.teacher})"),
                        ("baseline", f"student alone ({config.student})"),
                        ("student", f"distilled student ({config.student})")):
        print(f"  {label:<34} {accuracy[name]:.4f}")
    gain = accuracy["student"] - accuracy["baseline"]
    print(f"  distillation gain over the student alone: {100 * gain:+.2f} points")
    print(f"Models and results in {os.path.abspath(config.out_dir)}")


if __name__ == "__main__":
    app.run(main)
