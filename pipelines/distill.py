r"""Teacher -> student alone (baseline) -> distilled student -> quantization-aware distillation
-> TFLite export -> accuracy of every `.tflite` file and the parity gate.

    python -m pipelines.distill --flagfile=pipelines/configs/digits.flags --out_dir=runs/digits

Flags are validated before any training. The run directory receives `flags.txt` (re-runnable
with --flagfile), `config.json`, the models as `.keras` files, `tflite/` (the `.tflite` files,
`labels.txt`, `model_card.json`) and `results.json`.
"""

import dataclasses
import json
import os
import time
from typing import Optional

from absl import app, flags, logging

import tensorflow as tf

import tfkd
from tfkd import evaluate, export, files, quantize
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
flags.DEFINE_integer("qat_epochs", 5, "Epochs of quantization-aware distillation; 0 skips it.")
flags.DEFINE_float("qat_learning_rate", 1e-4, "Peak learning rate of quantization-aware distillation.")
flags.DEFINE_list("modes", ["float32", "float16", "dynamic", "int8", "int8_io_uint8"],
                  f"Export modes of the float student, from {list(export.MODES)}; the QAD student "
                  "is exported in the integer ones among them.")
flags.DEFINE_integer("representative_size", 200, "Calibration images for post-training int8.")
flags.DEFINE_float("max_drop_points", 1.0,
                   "Largest accuracy drop (points) allowed from the float student to a .tflite.")


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
    qat_epochs: int = 5
    qat_learning_rate: float = 1e-4
    modes: tuple[str, ...] = ("float32", "float16", "dynamic", "int8", "int8_io_uint8")
    representative_size: int = 200
    max_drop_points: float = 1.0

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
        for name in ("learning_rate", "qat_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0. Received: {getattr(self, name)}")
        if self.qat_epochs < 0:
            raise ValueError(f"--qat_epochs must be >= 0 (0 skips QAD). Received: {self.qat_epochs}")
        for mode in self.modes:
            export.check_mode(mode)
        if not self.max_drop_points >= 0:
            raise ValueError(f"--max_drop_points must be >= 0. Received: {self.max_drop_points}")
        # The loss and Distiller validate their own arguments; building them here fails fast.
        tfkd.losses.KD(self.temperature)
        if not 0.0 <= self.student_loss_weight <= 1.0:
            raise ValueError(
                "--student_loss_weight must be in [0, 1]. "
                f"Received: {self.student_loss_weight}"
            )


def _optimizer(learning_rate: float, steps: int) -> keras.optimizers.Optimizer:
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))
    return keras.optimizers.Adam(schedule)


def _save(model: keras.Model, path: str) -> None:
    with files.atomic_path(path) as tmp:
        model.save(tmp)


def train_classifier(model, train, validation, epochs: int, config: Config) -> keras.Model:
    """Trains `model` on hard labels alone (the teacher, and the student baseline)."""
    steps = epochs * int(train.cardinality())
    model.compile(
        optimizer=_optimizer(config.learning_rate, steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=config.jit_compile,
    )
    model.fit(train, validation_data=validation, epochs=epochs, verbose=2)
    return model


def distill(student, teacher, train, validation, config: Config, epochs: Optional[int] = None,
            learning_rate: Optional[float] = None) -> keras.Model:
    """Trains `student` (float or QAT) against the frozen `teacher`; returns the student."""
    epochs = config.student_epochs if epochs is None else epochs
    distiller = tfkd.Distiller(
        student=student,
        teacher=teacher,
        loss=tfkd.losses.KD(config.temperature),
        student_loss_weight=config.student_loss_weight,
    )
    steps = epochs * int(train.cardinality())
    distiller.compile(
        optimizer=_optimizer(learning_rate or config.learning_rate, steps),
        metrics=["accuracy"], jit_compile=config.jit_compile,
    )
    distiller.fit(train, validation_data=validation, epochs=epochs, verbose=2)
    return distiller.student


def quantization_aware_distillation(student, teacher, train, validation, config: Config):
    """A QAT copy of the distilled `student`, fine-tuned while the float teacher still teaches."""
    logging.info("%s", quantize.doctor(student))
    start = keras.models.clone_model(student)
    start.set_weights(student.get_weights())
    qat_student = quantize.quantize_student(start)
    return distill(qat_student, teacher, train, validation, config, epochs=config.qat_epochs,
                   learning_rate=config.qat_learning_rate)


def export_and_verify(student, qad_student, splits, test, config: Config) -> dict:
    """Exports every requested variant, measures each `.tflite` and applies the parity gate.

    Returns `{variant: {"accuracy", "size_bytes", "quantization", "file"}}`; the accuracies are
    also written into the model card. Raises `evaluate.ParityError` after writing everything.
    """
    tflite_dir = os.path.join(config.out_dir, "tflite")
    representative = None
    if any(m in export.INTEGER_MODES for m in config.modes):
        representative = export.representative_set(splits, config.representative_size)
    common = dict(preprocessing=splits.preprocessing, class_names=splits.class_names,
                  source_run=os.path.abspath(config.out_dir))
    card = export.export(student, tflite_dir, config.modes, representative=representative,
                         name="student", **common)
    integer_modes = [m for m in config.modes if m in export.INTEGER_MODES]
    if qad_student is not None and integer_modes:
        card = export.export(qad_student, tflite_dir, integer_modes, name="student_qad", **common)
    variants = {}
    for name, entry in card["variants"].items():
        path = os.path.join(tflite_dir, entry["file"])
        accuracy = evaluate.tflite_accuracy(path, test.as_numpy_iterator())
        entry["accuracy"] = {"split": "test", "value": accuracy}
        variants[name] = {"accuracy": accuracy, "size_bytes": entry["size_bytes"],
                          "quantization": entry["quantization"], "file": entry["file"]}
        logging.info("%s: test accuracy %.4f, %d bytes", name, accuracy, entry["size_bytes"])
    files.write_text(os.path.join(tflite_dir, "model_card.json"),
                     json.dumps(card, indent=2, sort_keys=True))
    return variants


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

    qad_student = None
    if config.qat_epochs:
        started = time.time()
        qad_student = quantization_aware_distillation(student, teacher, train, validation, config)
        results["student_qad"] = keras_accuracy(qad_student, test)
        timings["student_qad"] = time.time() - started

    variants = export_and_verify(student, qad_student, splits, test, config)
    summary = {"dataset": splits.name, "test_accuracy": results, "seconds": timings,
               "tflite": variants}
    files.write_text(
        os.path.join(config.out_dir, "results.json"), json.dumps(summary, indent=2, sort_keys=True)
    )
    # Last, so that a failing gate still leaves every artifact and number on disk.
    summary["parity_drops"] = evaluate.parity_gate(
        results["student"], {name: v["accuracy"] for name, v in variants.items()},
        config.max_drop_points, reference_name="float Keras student")
    return summary


def _config_from_flags() -> Config:
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(Config)}
    values["modes"] = tuple(values["modes"])
    return Config(**values)


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
    try:
        summary = run(config)
    except evaluate.ParityError as error:
        print(f"\nParity gate failed (all files and results.json were written):\n{error}")
        return 1
    print(format_summary(summary, config))
    return 0


def format_summary(summary: dict, config: Config) -> str:
    """The table printed at the end of a run."""
    accuracy = summary["test_accuracy"]
    lines = [f"\nDataset {summary['dataset']} - test accuracy (measured on CPU)"]
    for name, label in (("teacher", f"teacher  ({config.teacher})"),
                        ("baseline", f"student alone ({config.student})"),
                        ("student", f"distilled student ({config.student})"),
                        ("student_qad", "QAD student (Keras, fake-quantized)")):
        if name in accuracy:
            lines.append(f"  {label:<38} {accuracy[name]:.4f}")
    gain = accuracy["student"] - accuracy["baseline"]
    lines.append(f"  distillation gain over the student alone: {100 * gain:+.2f} points")
    lines.append(f"\n  {'.tflite variant':<30} {'quantization':<13} {'accuracy':>8} {'KiB':>8} "
                 f"{'drop':>7}")
    for name, v in summary["tflite"].items():
        drop = summary["parity_drops"][name]
        lines.append(f"  {name:<30} {str(v['quantization']):<13} {v['accuracy']:>8.4f} "
                     f"{v['size_bytes'] / 1024:>8.1f} {drop:>+7.2f}")
    lines.append(f"Parity gate: every .tflite within {config.max_drop_points:.2f} points of the "
                 "float student.")
    lines.append(f"Models, .tflite files and results in {os.path.abspath(config.out_dir)}")
    return "\n".join(lines)


if __name__ == "__main__":
    app.run(main)
