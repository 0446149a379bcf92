r"""Distillation speed: the keras.io per-step-teacher recipe vs tfkd (per step, jit, cache) vs
the student trained alone, on CIFAR-10 images.

    python -m benchmarks.train_speed --data=PATH/TO/cifar10

The parent process writes a class-balanced subset of the training images to a temporary .npy
file once, then runs every variant in its own child process (the same script with --variant),
one after the other, so each has a clean TensorFlow runtime and its own peak memory. A variant
trains `--epochs` epochs with flip + pad-crop augmentation; the median of the epochs after the
first is timed (the first includes tracing). The cache variant also reports what building its
cache cost (one teacher pass per view), which a run pays once and reruns (other students,
resumed runs) reuse. Weights are untrained: speed does not depend on their values. Writes
benchmarks/results/<name>.json and its section of RESULTS.md.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import typing

import numpy as np
from absl import app, flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "CIFAR-10 image folder (train/<class>/*.jpg, test/...).")
flags.DEFINE_integer("images", 10000, "Training images.")
flags.DEFINE_string("teacher", "resnet56", "Teacher model.")
flags.DEFINE_string("student", "resnet8", "Student model.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("epochs", 4, "Epochs per variant; all but the first are timed.")
flags.DEFINE_integer("views", 2, "Augmented views in the cache variant.")
flags.DEFINE_list(
    "variants", ["keras_io", "tfkd", "tfkd_jit", "tfkd_cache", "alone"], "Variants to run."
)
flags.DEFINE_string("name", "train_speed", "Results file and RESULTS.md section name.")
flags.DEFINE_string("variant", None, "Internal: run one variant on --images_file and print JSON.")
flags.DEFINE_string("images_file", None, "Internal: the .npz subset written by the parent.")

SMOKE = {
    "data": common.CIFAR_SAMPLE,
    "images": 64,
    "teacher": "cnn_small",
    "student": "cnn_tiny",
    "batch_size": 32,
    "epochs": 2,
    "variants": ["keras_io", "tfkd_cache"],
    "name": "train_speed_smoke",
}

DESCRIPTIONS = {
    "keras_io": "(a) keras.io Distiller recipe: teacher forward every step, no XLA",
    "tfkd": "(b) tfkd.Distiller default: teacher forward every step",
    "tfkd_jit": "(b') tfkd.Distiller, jit_compile=True",
    "tfkd_cache": "(c) tfkd.Distiller on tfkd.distill.teacher_cache batches",
    "alone": "(d) student alone (cross-entropy), the limit",
}


def _keras_io_distiller(keras, tf):
    """The keras.io "Knowledge Distillation" example's Distiller, as written there."""

    class Distiller(keras.Model):
        def __init__(self, student, teacher):
            super().__init__()
            self.teacher = teacher
            self.student = student

        def compile(
            self,
            optimizer,
            metrics,
            student_loss_fn,
            distillation_loss_fn,
            alpha=0.1,
            temperature=3,
        ):
            super().compile(optimizer=optimizer, metrics=metrics)
            self.student_loss_fn = student_loss_fn
            self.distillation_loss_fn = distillation_loss_fn
            self.alpha = alpha
            self.temperature = temperature

        def train_step(self, data):
            x, y = data
            teacher_predictions = self.teacher(x, training=False)
            with tf.GradientTape() as tape:
                student_predictions = self.student(x, training=True)
                student_loss = self.student_loss_fn(y, student_predictions)
                distillation_loss = (
                    self.distillation_loss_fn(
                        tf.nn.softmax(teacher_predictions / self.temperature, axis=1),
                        tf.nn.softmax(student_predictions / self.temperature, axis=1),
                    )
                    * self.temperature**2
                )
                loss = self.alpha * student_loss + (1 - self.alpha) * distillation_loss
            trainable_vars = self.student.trainable_variables
            gradients = tape.gradient(loss, trainable_vars)
            self.optimizer.apply_gradients(zip(gradients, trainable_vars))
            self.compiled_metrics.update_state(y, student_predictions)
            results = {m.name: m.result() for m in self.metrics}
            results.update({"student_loss": student_loss, "distillation_loss": distillation_loss})
            return results

    return Distiller


def run_variant(variant: str, images_file: str) -> dict:
    import tensorflow as tf

    import tfkd
    from tfkd.distill import teacher_cache
    from tfkd.keras import keras
    from tfkd.measure import benchmark

    keras.utils.set_random_seed(0)
    arrays = np.load(images_file)
    images, labels = arrays["images"], arrays["labels"]
    prep = tfkd.data.Preprocessing((32, 32), 3, 1 / 255, (0.5,) * 3, (0.25,) * 3)
    augmentation = tfkd.data.Augmentation(flip=True, pad_crop=4)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    student = tfkd.models.build(FLAGS.student, prep.input_shape, 10)
    teacher = None if variant == "alone" else tfkd.models.build(FLAGS.teacher, prep.input_shape, 10)
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    result: dict[str, typing.Any] = {"variant": variant, "description": DESCRIPTIONS[variant]}
    rss_before = benchmark.reset_peak_rss()
    if variant == "tfkd_cache":
        started = time.perf_counter()
        cache = teacher_cache.build(
            teacher,
            dataset,
            prep,
            augmentation=augmentation,
            views=FLAGS.views,
            seed=0,
            batch_size=256,
        )
        result["cache_build_seconds"] = time.perf_counter() - started
        result["views"] = FLAGS.views
        del teacher
        data = teacher_cache.batches(cache, dataset, prep, FLAGS.batch_size, shuffle=True)
        trainer = tfkd.Distiller(student, None)
        trainer.compile(optimizer)
    else:
        data = tfkd.data.batches(
            dataset, prep, FLAGS.batch_size, shuffle=True, augmentation=augmentation
        )
        if variant == "keras_io":
            trainer = _keras_io_distiller(keras, tf)(student, teacher)
            trainer.compile(
                optimizer, ["accuracy"], ce, keras.losses.KLDivergence(), alpha=0.1, temperature=10
            )
        elif variant in ("tfkd", "tfkd_jit"):
            trainer = tfkd.Distiller(student, teacher)
            trainer.compile(optimizer, jit_compile=variant == "tfkd_jit")
        else:
            trainer = student
            trainer.compile(optimizer, ce)
    starts, seconds = [], []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: starts.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: seconds.append(time.perf_counter() - starts[-1]),
    )
    trainer.fit(data, epochs=FLAGS.epochs, callbacks=[timer], verbose=0)
    result["epoch_seconds"] = seconds
    result["samples_per_second"] = len(labels) / float(np.median(seconds[1:]))
    result["peak_rss_bytes"] = benchmark.peak_rss_bytes()
    result["peak_growth_bytes"] = result["peak_rss_bytes"] - rss_before
    return result


def _macs(name: str) -> int:
    import tfkd
    from tfkd import export
    from tfkd.measure import benchmark

    model = tfkd.models.build(name, (32, 32, 3), 10)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.tflite")
        with open(path, "wb") as handle:
            handle.write(export.convert(model, "float32"))
        return benchmark.model_cost(path).macs


def main(argv):
    del argv
    if FLAGS.variant:
        print("RESULT " + json.dumps(run_variant(FLAGS.variant, FLAGS.images_file)), flush=True)
        return
    common.apply_smoke(SMOKE)
    import tfkd

    splits = tfkd.data.load(f"folder:{FLAGS.data}", seed=0)
    images, labels = zip(*common.shuffled(splits.train).take(FLAGS.images).as_numpy_iterator())
    macs = {"teacher": _macs(FLAGS.teacher), "student": _macs(FLAGS.student)}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        images_file = os.path.join(tmp, "subset.npz")
        np.savez(images_file, images=np.stack(images), labels=np.array(labels))
        for variant in FLAGS.variants:
            command = [
                sys.executable,
                "-m",
                "benchmarks.train_speed",
                f"--variant={variant}",
                f"--images_file={images_file}",
            ] + [
                f"--{name}={FLAGS[name].value}"
                for name in ("teacher", "student", "batch_size", "epochs", "views")
            ]
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
            if completed.returncode or not lines:
                raise RuntimeError(f"Variant {variant} failed:\n{completed.stderr[-3000:]}")
            results[variant] = json.loads(lines[-1][len("RESULT ") :])
            print(variant, results[variant], flush=True)
    payload = {
        "variants": results,
        "macs": macs,
        "machine": common.machine(),
        "flags": {
            f: FLAGS[f].value
            for f in ("images", "teacher", "student", "batch_size", "epochs", "views")
        },
    }
    common.write_json(FLAGS.name, payload)
    common.write_section(FLAGS.name, _section(payload))


def _ratio(value, reference, suffix=""):
    return "" if reference is None else f"{value / reference:.2f}{suffix}"


def _section(payload: dict) -> str:
    results, macs = payload["variants"], payload["macs"]
    rate = {v: r["samples_per_second"] for v, r in results.items()}
    # Variants left out of a run (--variants) are left out of the ratios that need them.
    reference = {v: rate.get(v) for v in ("keras_io", "alone")}
    rows = "\n".join(
        f"| {r['description']} | {r['samples_per_second']:.0f} | "
        f"{_ratio(rate[v], reference['keras_io'], 'x')} | {_ratio(rate[v], reference['alone'])} | "
        f"{r['peak_rss_bytes'] / 2**20:.0f} | {r['peak_growth_bytes'] / 2**20:.0f} |"
        for v, r in results.items()
    )
    cache = results.get("tfkd_cache", {})
    checks = []
    if cache and reference["keras_io"] and reference["alone"]:
        c_a, c_d = rate["tfkd_cache"] / rate["keras_io"], rate["tfkd_cache"] / rate["alone"]
        checks = [
            f"(c)/(a) = {c_a:.2f} (target ≥ 3: {'met' if c_a >= 3 else 'not met'})",
            f"(c)/(d) = {c_d:.2f} (target ≥ 0.9: {'met' if c_d >= 0.9 else 'not met'})",
        ]
        checks.append(
            f"(d)/(a) = {rate['alone'] / rate['keras_io']:.2f} is the ceiling of "
            "(c)/(a): the cache cannot make distillation faster than training the "
            "student alone"
        )
        build = cache["cache_build_seconds"]
        checks.append(
            f"building the cache ({cache['views']} views) took {build:.1f} s once, "
            f"{build / (payload['flags']['images'] / rate['keras_io']):.2f} of an "
            "(a) epoch"
        )
    return f"""
## Distillation speed (`benchmarks/train_speed.py`, `{FLAGS.name}`)

{payload["machine"]}. {payload["flags"]["images"]} CIFAR-10 training images, batch
{payload["flags"]["batch_size"]}, flip + pad-crop, SGD; teacher {payload["flags"]["teacher"]}
({macs["teacher"] / 1e6:.1f} M MACs), student {payload["flags"]["student"]}
({macs["student"] / 1e6:.1f} M MACs; the teacher costs {macs["teacher"] / macs["student"]:.1f}x).
Samples per second: median over epochs 2–{payload["flags"]["epochs"]} (the first includes
tracing), each
variant in its own process. Peak RSS: the process's peak resident set from just before the
cache/training starts (TensorFlow runtime, data and models included); growth: that peak minus
the resident set at that moment.

| variant | samples/s | vs (a) | vs (d) | peak RSS MiB | peak growth MiB |
|---|---|---|---|---|---|
{rows}

{"; ".join(checks)}.
"""


if __name__ == "__main__":
    app.run(main)
