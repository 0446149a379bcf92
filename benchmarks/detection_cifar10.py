r"""Detection distillation on a generated set: the student alone against the student distilled from
a larger detector, the same steps for both, over seeds; the distilled student's int8 file against
its float model; latency of both files on this host.

    python -m benchmarks.detection_cifar10 --data=../shared/data/cifar10 --seeds=0,1

The set is `tools/make_detection_set.py`'s: CIFAR-10 objects of `--classes` pasted at random
scales onto blurred photos of the other classes. mAP by pycocotools on the validation images;
the gain's 95% interval resamples those images (paired: the same images for both students).
"""

import os
import time

import numpy as np
from absl import app, flags

from benchmarks import common
from tfkd.keras import keras
from tfkd.measure import benchmark
from tfkd.tasks.detection import data, export, metrics, models
from tools.make_detection_set import make_detection_set

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "CIFAR-10 image folder (train/<class>/*.jpg, test/...).")
flags.DEFINE_list("classes", ["airplane", "frog", "truck"], "Object classes.")
flags.DEFINE_integer("train_images", 1024, "Generated training images.")
flags.DEFINE_integer("val_images", 256, "Generated validation images.")
flags.DEFINE_integer("image_size", 64, "Image side in pixels.")
flags.DEFINE_string("teacher", "detector_large", "Teacher detector.")
flags.DEFINE_string("student", "detector_small", "Student detector.")
flags.DEFINE_integer("teacher_epochs", 40, "Teacher epochs.")
flags.DEFINE_integer("student_epochs", 30, "Epochs of each student.")
flags.DEFINE_float("student_loss_weight", 0.5, "Label weight of the distilled student.")
flags.DEFINE_list("seeds", ["0", "1"], "Student seeds.")
flags.DEFINE_integer("resamples", 200, "Resamplings of the validation images for the interval.")

SMOKE = {
    "data": common.CIFAR_SAMPLE,
    "train_images": 32,
    "val_images": 8,
    "teacher_epochs": 1,
    "student_epochs": 1,
    "seeds": ["0"],
    "resamples": 2,
}
BATCH = 32
LEARNING_RATE = 3e-3


def _fit(trainer, x, targets, epochs):
    steps = epochs * max(1, len(x) // BATCH)
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps)
    trainer.compile(optimizer=keras.optimizers.Adam(schedule))
    trainer.fit(x, targets, batch_size=BATCH, epochs=epochs, verbose=0)


def _paired_interval(split, a, b, resamples: int, seed: int) -> tuple[float, float]:
    """95% interval of mAP(a) - mAP(b) over resamplings of the same images."""
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        pick = rng.integers(0, len(split.images), len(split.images))
        sample = data.DetectionSplit(tuple(split.images[i] for i in pick), split.class_names)
        differences.append(
            metrics.coco_map(sample, [a[i] for i in pick])["map"]
            - metrics.coco_map(sample, [b[i] for i in pick])["map"]
        )
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)


def main(argv):
    del argv
    common.apply_smoke(SMOKE)
    started = time.time()
    size = FLAGS.image_size
    prep = models.preprocessing(size)
    work = common.work_dir("detection")
    root = os.path.join(work, "set")
    counts = {"train": FLAGS.train_images, "val": FLAGS.val_images}
    make_detection_set(FLAGS.data, root, FLAGS.classes, counts, size, 3, "coco", seed=0)
    splits = data.load(f"coco:{root}")
    train, val = splits["train"], splits["val"]
    x = prep.normalize(models.images(train, size)).numpy()
    val_images = models.images(val, size)
    xv = prep.normalize(val_images).numpy()
    sizes = [(i.width, i.height) for i in val.images]
    classes = len(FLAGS.classes)

    keras.utils.set_random_seed(0)
    teacher, anchors = models.build(FLAGS.teacher, size, classes)
    targets = models.training_targets(train, anchors)
    _fit(models.DetectorTrainer(teacher), x, targets, FLAGS.teacher_epochs)
    teacher_map = metrics.coco_map(val, models.detect(teacher, anchors, xv, sizes))
    print("teacher", teacher_map, flush=True)

    rows = []
    for seed in map(int, FLAGS.seeds):
        found = {}
        for kind in ("alone", "distilled"):
            keras.utils.set_random_seed(seed)
            student, _ = models.build(FLAGS.student, size, classes)
            trainer = (
                models.DetectorTrainer(student)
                if kind == "alone"
                else models.DetectionDistiller(student, teacher, anchors, FLAGS.student_loss_weight)
            )
            _fit(trainer, x, targets, FLAGS.student_epochs)
            found[kind] = models.detect(student, anchors, xv, sizes)
        scores = {k: metrics.coco_map(val, v) for k, v in found.items()}
        interval = _paired_interval(val, found["distilled"], found["alone"], FLAGS.resamples, seed)
        files = {}
        for mode in export.MODES:
            files[mode] = os.path.join(work, f"student_{seed}_{mode}.tflite")
            with open(files[mode], "wb") as handle:
                handle.write(export.convert(student, anchors, FLAGS.classes, prep, mode, x[:128]))
        tflite = {
            mode: metrics.coco_map(val, export.run_tflite(path, val_images, prep, sizes))
            for mode, path in files.items()
        }
        latency = {
            mode: benchmark.measure(path, threads=1, runs=50).latency.p50_ms
            for mode, path in files.items()
        }
        row = {
            "seed": seed,
            "alone": scores["alone"],
            "distilled": scores["distilled"],
            "gain_interval": interval,
            "tflite": tflite,
            "p50_ms": latency,
        }
        rows.append(row)
        print(row, flush=True)
    names = [
        "data",
        "classes",
        "train_images",
        "val_images",
        "image_size",
        "teacher",
        "student",
        "teacher_epochs",
        "student_epochs",
        "student_loss_weight",
        "seeds",
        "resamples",
    ]
    results = {"teacher": teacher_map, "rows": rows}
    minutes = common.write_results("detection_cifar10", results, started, names)

    def points(value):
        return f"{100 * value:.1f}"

    table = "\n".join(
        f"| {r['seed']} | {points(r['alone']['map'])} ({points(r['alone']['map50'])}) | "
        f"{points(r['distilled']['map'])} ({points(r['distilled']['map50'])}) | "
        f"{100 * (r['distilled']['map'] - r['alone']['map']):+.1f} "
        f"[{100 * r['gain_interval'][0]:+.1f}, {100 * r['gain_interval'][1]:+.1f}] | "
        f"{points(r['tflite']['float32']['map'])} | "
        f"{points(r['tflite']['int8_io_uint8']['map'])} | "
        f"{r['p50_ms']['float32']:.3f} | {r['p50_ms']['int8_io_uint8']:.3f} |"
        for r in rows
    )
    common.write_section(
        "detection_cifar10",
        f"""
## Detection distillation on a generated set (`benchmarks/detection_cifar10.py`)

{common.machine()}; {minutes:.0f} min in all. {FLAGS.train_images} training and
{FLAGS.val_images} validation images of {size}x{size} from `tools/make_detection_set.py`
(CIFAR-10 {", ".join(FLAGS.classes)}, 1 to 3 objects each). Teacher {FLAGS.teacher}
({FLAGS.teacher_epochs} epochs): mAP {points(teacher_map["map"])}, mAP@.5
{points(teacher_map["map50"])} on validation. Students {FLAGS.student}, {FLAGS.student_epochs}
epochs each, the same steps; the distilled one at label weight {FLAGS.student_loss_weight:g}
(dense KD T=2 and GIoU to the teacher's boxes, by its foreground probability). mAP@[.5:.95] %
(mAP@.5 in parentheses) by pycocotools on validation; the gain's 95% interval resamples the
validation images ({FLAGS.resamples} times). The `.tflite` columns are the distilled student's
files (exported with TFLite_Detection_PostProcess; int8 calibrated on 128 training images, raw
bytes in); p50 latency with LiteRT, one thread, post-processing included.

| seed | alone | distilled | gain [95%] | float32 file | int8 file | float32 p50 ms | int8 p50 ms |
|---|---|---|---|---|---|---|---|
{table}
""",
    )


if __name__ == "__main__":
    app.run(main)
