r"""The detection recipe through the pipeline over seeds: what its report says.

    python -m benchmarks.detection_pipeline --data=../shared/data/cifar10 --seeds=0,1

Builds the generated set of the recipe's comment (`tools/make_detection_set.py`: CIFAR-10
airplanes, frogs and trucks pasted onto blurred photos, 1024 training and 256 test images of
64x64), then runs `python -m pipelines.distill --flagfile=pipelines/configs/detection.flags
--seed=S` once per seed, each in its own process, and records from its report: the teacher's,
the student alone's and the distilled student's test mAP, the gain with its paired bootstrap
interval, which student shipped, the shipped student's float32 and int8 files' mAP, their p50
latency on this host and the wall time.

Writes benchmarks/results/detection_pipeline.json and its section of RESULTS.md.
"""

import os
import time

from absl import app, flags

from benchmarks import common
from tools.make_detection_set import make_detection_set

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "CIFAR-10 image folder (train/<class>/*.jpg, test/...).")
flags.DEFINE_list("classes", ["airplane", "frog", "truck"], "Object classes.")
flags.DEFINE_integer("train_images", 1024, "Generated training images.")
flags.DEFINE_integer("test_images", 256, "Generated test images (the set's val/).")
flags.DEFINE_list("seeds", ["0", "1"], "Seeds of the runs (validation split, weights, batches).")
flags.DEFINE_list("pipeline_flags", [], "Extra flags for every run (after the recipe).")

RECIPE = os.path.join("pipelines", "configs", "detection.flags")
SMOKE = {
    "data": common.CIFAR_SAMPLE,
    "train_images": 24,
    "test_images": 8,
    "seeds": ["0"],
    "pipeline_flags": [
        # tfkd's own small detectors: a second each to convert, where the recipe's MobileNets
        # take half a minute (the smoke checks this script's mechanics, not the recipe).
        "--teacher=detector_large",
        "--student=detector_small",
        "--teacher_epochs=1",
        "--student_epochs=1",
        "--qat_epochs=0",
        "--modes=float32",
        "--representative_size=8",
        "--benchmark_runs=3",
        "--max_drop_points=100",
    ],
}


def _run(seed: int, dataset: str, out_dir: str) -> dict:
    started = time.time()
    report = common.run_pipeline(
        RECIPE, out_dir, f"--dataset={dataset}", f"--seed={seed}", *FLAGS.pipeline_flags
    )
    models = {m["name"]: m for m in report["models"]}
    files = {
        m["mode"]: {
            "map": m["accuracy"],
            "p50_ms": m["latency_ms"]["p50"] if m["latency_ms"] else None,
            "size_bytes": m["size_bytes"],
        }
        for name, m in models.items()
        if name.startswith("student_") and m["format"] == "tflite" and "qad" not in name
    }
    qad = models.get("student_qad_int8_io_uint8")
    summary = report["summary"]
    return {
        "seed": seed,
        "minutes": (time.time() - started) / 60,
        "teacher": models["teacher"]["accuracy"],
        "alone": models["baseline"]["accuracy"],
        "distilled": models["student"]["accuracy"],
        "gain": summary["kd_gain_test"],
        "shipped": summary["shipped"],
        "files": files,
        "qad_int8": qad["accuracy"] if qad else None,
    }


def _points(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _markdown(result: dict) -> str:
    rows = []
    for r in result["runs"]:
        low, high = r["gain"]["interval"]
        files = r["files"]
        rows.append(
            f"| {r['seed']} | {_points(r['teacher'])} | {_points(r['alone'])} | "
            f"{_points(r['distilled'])} | {100 * r['gain']['difference']:+.1f} "
            f"[{100 * low:+.1f}, {100 * high:+.1f}] ({r['gain']['verdict']}) | "
            f"{'distilled' if r['shipped'] == 'student' else 'alone'} | "
            + " | ".join(
                f"{_points(files.get(mode, {}).get('map'))}"
                for mode in ("float32", "int8_io_uint8")
            )
            + f" | {_points(r['qad_int8'])} | "
            + " | ".join(
                f"{files[mode]['p50_ms']:.3f}" if files.get(mode, {}).get("p50_ms") else "-"
                for mode in ("float32", "int8_io_uint8")
            )
            + f" | {r['minutes']:.1f} |"
        )
    extra = f", with {' '.join(result['pipeline_flags'])}" if result["pipeline_flags"] else ""
    return "\n".join(
        [
            "## Detection through the pipeline (`benchmarks/detection_pipeline.py`)",
            "",
            f"{result['machine']}. `python -m pipelines.distill --flagfile={RECIPE} --seed=S`"
            f"{extra} on {result['train_images']} training and {result['test_images']} test "
            f"images of 64x64 from `tools/make_detection_set.py` (CIFAR-10 "
            f"{', '.join(result['classes'])}, 1 to 3 objects each), once per seed. Test COCO "
            "mAP@[.5:.95] % by pycocotools. The gain is the distilled student minus the student "
            "alone with its 95% paired bootstrap interval (200 resamplings of the test images), "
            "as the report states it. The file columns are the shipped student's `.tflite` "
            "files (TFLite_Detection_PostProcess inside, int8 with raw bytes in) and the QAD "
            "student's int8 file; p50 latency with LiteRT on this host, one thread, "
            "post-processing included.",
            "",
            "| seed | teacher | alone | distilled | gain [95%] | shipped | float32 file | "
            "int8 file | QAD int8 file | float32 p50 ms | int8 p50 ms | minutes |",
            "|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )


def main(argv):
    del argv
    common.apply_smoke(SMOKE)
    work = common.work_dir("detection_pipeline")
    root = os.path.join(work, "set")
    counts = {"train": FLAGS.train_images, "val": FLAGS.test_images}
    make_detection_set(FLAGS.data, root, FLAGS.classes, counts, 64, 3, "coco", seed=0)
    runs = [
        _run(int(seed), f"coco:{root}", os.path.join(work, f"seed{seed}")) for seed in FLAGS.seeds
    ]
    result = {
        "machine": common.machine(),
        "pipeline_flags": FLAGS.pipeline_flags,
        "classes": FLAGS.classes,
        "train_images": FLAGS.train_images,
        "test_images": FLAGS.test_images,
        "runs": runs,
    }
    common.write_json("detection_pipeline", result)
    common.write_section("detection_pipeline", _markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    app.run(main)
