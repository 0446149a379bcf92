r"""Your own photos, end to end: the photos recipe on a photo-like folder built from CIFAR-10.

    python -m benchmarks.photos --data=PATH_TO_CIFAR10

1. Builds a folder like a phone's: 5 CIFAR-10 classes (600 train + 140 val each), every image
   upscaled to a random size (long side 150-500 px, phone aspect ratios), 20% stored rotated
   with an EXIF orientation tag (`tools/make_photo_folder.py`).
2. Stands in for ImageNet (no network here): pretrains the teacher's backbone on the 5 other
   CIFAR-10 classes (`tools/pretrain_backbone.py`), a different, larger set, as ImageNet is.
3. Measures loading: decoding every photo once at the student's and the teacher's sizes, into
   memory, and into the disk cache (cold, then reused), each in its own process (time, peak RSS).
4. Runs `pipelines/configs/photos.flags` on the folder with that backbone, in its own process:
   wall time, peak RSS, seconds per epoch of each training stage, accuracies, latency.

Writes benchmarks/results/photos.json and its section of RESULTS.md.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

from absl import app, flags

from benchmarks import common
from pipelines import config as config_lib
from tools.make_photo_folder import make_photo_folder

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "CIFAR-10 image folder (PATH/train/<class>/*.jpg, test/).")
flags.DEFINE_list(
    "classes",
    ["airplane", "bird", "cat", "deer", "ship"],
    "The photo folder's classes; the other classes pretrain the backbone.",
)
flags.DEFINE_integer("train_per_class", 600, "Training photos per class.")
flags.DEFINE_integer("val_per_class", 140, "Validation photos per class.")
flags.DEFINE_integer("pretrain_per_class", 3000, "Pretraining images per other class.")
flags.DEFINE_integer("pretrain_epochs", 12, "Epochs of backbone pretraining.")
flags.DEFINE_string(
    "pretrained",
    None,
    "Reuse this backbone .h5 (made by tools/pretrain_backbone.py) instead of pretraining.",
)
flags.DEFINE_string("pretrained_note", "", "How --pretrained was made, for the results.")
flags.DEFINE_list("pipeline_flags", [], "Extra flags for the pipeline run (after the recipe).")
flags.DEFINE_string("work_dir", None, "Where the folders and the run go (default: temporary).")

ROOT = os.path.dirname(common.HERE)
RECIPE = os.path.join(ROOT, "pipelines", "configs", "photos.flags")
SMOKE = {
    "data": common.CIFAR_SAMPLE,
    "classes": ["cat", "dog"],
    "train_per_class": 8,
    "val_per_class": 4,
    "pretrain_per_class": 6,
    "pretrain_epochs": 1,
    "pipeline_flags": [
        "--image_size=32,32",
        "--teacher_image_size=48,48",
        "--teacher=keras_applications:MobileNetV3Small",
        "--teacher_head_epochs=1",
        "--teacher_epochs=1",
        "--student_epochs=1",
        "--qat_epochs=0",
        "--modes=float32",
        "--threads=1",
        "--benchmark_runs=3",
        "--max_drop_points=100",
        "--batch_size=8",
    ],
}


def _run(command: list, log_path: str) -> dict:
    """Runs `command` to the end; its wall time, peak RSS and output (also kept in log_path)."""
    started = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
        _, status, usage = os.wait4(process.pid, 0)
    output = open(log_path, encoding="utf-8").read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return {
        "seconds": time.time() - started,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "output": output,
    }


def _pretrain_folder(source: str, classes: list, out: str, per_class: int) -> None:
    for split, source_split, limit in (
        ("train", "train", per_class),
        ("val", "test", max(2, per_class // 7)),
    ):
        for name in classes:
            os.makedirs(os.path.join(out, split, name), exist_ok=True)
            for file_name in sorted(os.listdir(os.path.join(source, source_split, name)))[:limit]:
                os.symlink(
                    os.path.join(source, source_split, name, file_name),
                    os.path.join(out, split, name, file_name),
                )


def _recipe(overrides: list):
    """The pipeline's `Config` for the recipe with `overrides`, parsed as the program parses it."""
    values = flags.FlagValues()
    config_lib.define_flags(values)
    values(["photos", f"--flagfile={RECIPE}", *overrides])
    return config_lib.from_flags(values)


_LOAD = """
import json, sys, time
started = time.time()
import tfkd
splits = tfkd.data.load(sys.argv[1], image_size=sys.argv[2].split(","),
                        extra_sizes=[sys.argv[3].split(",")], resize="crop", cache=sys.argv[4],
                        cache_dir=sys.argv[5])
print(json.dumps({"seconds_with_import": time.time() - started, "sizes": splits.sizes}))
"""


def _load(
    folder: str, student: str, teacher: str, cache: str, cache_dir: str, log_path: str
) -> dict:
    run = _run(
        [sys.executable, "-c", _LOAD, f"folder:{folder}", student, teacher, cache, cache_dir],
        log_path,
    )
    return {"seconds": run["seconds"], "peak_rss_mb": run["peak_rss_mb"]}


def _epoch_seconds(output: str) -> dict:
    """Mean seconds per epoch of each training stage, from its per-epoch progress lines."""
    found: dict[str, list[float]] = {}
    for stage, seconds in re.findall(r"^\s+(\w+) epoch \d+/\d+ .* ([\d.]+) s/epoch$", output, re.M):
        found.setdefault(stage, []).append(float(seconds))
    return {stage: sum(v) / len(v) for stage, v in found.items()}


def main(argv):
    del argv
    common.apply_smoke(SMOKE)
    recipe = _recipe(FLAGS.pipeline_flags)
    work = FLAGS.work_dir or common.work_dir("photos")
    os.makedirs(work, exist_ok=True)
    photos = os.path.join(work, "photos")
    if os.path.exists(photos):
        shutil.rmtree(photos)
    made = make_photo_folder(
        FLAGS.data, photos, FLAGS.classes, FLAGS.train_per_class, FLAGS.val_per_class
    )
    others = sorted(set(os.listdir(os.path.join(FLAGS.data, "train"))) - set(FLAGS.classes))
    results = {
        "machine": common.machine(),
        "photos": made,
        "classes": FLAGS.classes,
        "pretrain_classes": others,
    }

    backbone = FLAGS.pretrained
    if backbone is not None:
        results["pretrain"] = {"file": os.path.basename(backbone), "note": FLAGS.pretrained_note}
    else:
        pretrain = os.path.join(work, "pretrain")
        shutil.rmtree(pretrain, ignore_errors=True)
        _pretrain_folder(FLAGS.data, others, pretrain, FLAGS.pretrain_per_class)
        backbone = os.path.join(work, "backbone.h5")
        run = _run(
            [
                sys.executable,
                "-m",
                "tools.pretrain_backbone",
                f"--dataset=folder:{pretrain}",
                f"--epochs={FLAGS.pretrain_epochs}",
                f"--model={recipe.teacher}",
                "--image_size=96,96",
                f"--out={backbone}",
            ],
            os.path.join(work, "pretrain.log"),
        )
        accuracy = re.search(r"validation accuracy ([\d.]+)", run["output"])
        results["pretrain"] = {
            "seconds": run["seconds"],
            "images_per_class": FLAGS.pretrain_per_class,
            "epochs": FLAGS.pretrain_epochs,
            "image_size": [96, 96],
            "val_accuracy": float(accuracy.group(1)) if accuracy else None,
        }

    student = ",".join(map(str, recipe.image_size))
    teacher = ",".join(map(str, recipe.teacher_image_size))
    cache_dir = os.path.join(work, "cache")
    shutil.rmtree(cache_dir, ignore_errors=True)
    # The smoke run checks one load (each is a process of its own, TensorFlow imported again).
    caches = (
        {"memory": "memory"}
        if FLAGS.smoke
        else {"memory": "memory", "disk_cold": "disk", "disk_warm": "disk"}
    )
    results["load"] = {
        name: _load(
            photos, student, teacher, cache, cache_dir, os.path.join(work, f"load_{name}.log")
        )
        for name, cache in caches.items()
    }

    out_dir = os.path.join(work, "run")
    shutil.rmtree(out_dir, ignore_errors=True)
    run = _run(
        [
            sys.executable,
            "-m",
            "pipelines.distill",
            f"--flagfile={RECIPE}",
            f"--dataset=folder:{photos}",
            f"--teacher_weights={backbone}",
            f"--out_dir={out_dir}",
            *FLAGS.pipeline_flags,
        ],
        os.path.join(work, "pipeline.log"),
    )
    with open(os.path.join(out_dir, "report.json"), encoding="utf-8") as f:
        # The results ship: no paths of this machine in them.
        report = json.loads(f.read().replace(work, "WORK"))
    with open(os.path.join(out_dir, "manifest.json"), encoding="utf-8") as f:
        stages = json.load(f)["stages"]
    results["pipeline"] = {
        "seconds": run["seconds"],
        "peak_rss_mb": run["peak_rss_mb"],
        "stage_peak_rss_mb": {
            name: entry["metrics"]["peak_rss_mb"] for name, entry in stages.items()
        },
        "epoch_seconds": _epoch_seconds(run["output"]),
        "terminal_lines": run["output"].count("\n"),
        "flags": FLAGS.pipeline_flags,
        "report": report,
    }
    common.write_json("photos", results)
    common.write_section("photos", _markdown(results))
    print(_markdown(results))


def _markdown(results: dict) -> str:
    pipeline, load, made = results["pipeline"], results["load"], results["photos"]
    report = pipeline["report"]
    summary = report["summary"]
    models = {m["name"]: m for m in report.get("models", [])}

    def accuracy(name):
        model = models.get(name)
        return (
            f"{100 * model['accuracy']:.2f}"
            if model and model.get("accuracy") is not None
            else "n/a"
        )

    lines = [
        "## Your own photos, end to end (`benchmarks/photos.py`)",
        "",
        f"Measured on {results['machine']}. A photo-like folder: {made['images']} JPEGs of "
        f"CIFAR-10 classes {', '.join(results['classes'])}, upscaled to random sizes (long "
        f"side 150-500 px), {made['rotated']} stored rotated with an EXIF orientation tag. "
        f"The teacher's backbone was pretrained on the other classes "
        f"({', '.join(results['pretrain_classes'])}: a stand-in for ImageNet, which this "
        "machine cannot download)"
        + (
            f": {results['pretrain']['images_per_class']} images per class at 96x96, "
            f"{results['pretrain']['epochs']} epochs, {results['pretrain']['seconds'] / 60:.1f} "
            f"min, validation accuracy {100 * results['pretrain']['val_accuracy']:.1f}%."
            if "seconds" in results.get("pretrain", {})
            else f" ({results['pretrain']['note']})."
        ),
        "",
        "| loading (decode once, student + teacher sizes) | seconds (incl. imports) "
        "| peak RSS MB |",
        "|---|---|---|",
        *(
            f"| {name.replace('_', ' ')} | {m['seconds']:.1f} | {m['peak_rss_mb']:.0f} |"
            for name, m in load.items()
        ),
        "",
        f"The whole recipe (`pipelines/configs/photos.flags`"
        f"{', ' + ' '.join(pipeline['flags']) if pipeline['flags'] else ''}): "
        f"{pipeline['seconds'] / 60:.1f} min wall, peak RSS {pipeline['peak_rss_mb']:.0f} MB, "
        f"{pipeline['terminal_lines']} lines of output. Peak RSS of each stage (MB, from the "
        "run's manifest): "
        + ", ".join(
            f"{name} {mb:.0f}" for name, mb in pipeline.get("stage_peak_rss_mb", {}).items()
        )
        + ".",
        "",
        "| training stage | seconds per epoch |",
        "|---|---|",
        *(f"| {stage} | {seconds:.1f} |" for stage, seconds in pipeline["epoch_seconds"].items()),
        "",
        "| model | test accuracy % |",
        "|---|---|",
        *(f"| {name} | {accuracy(name)} |" for name in models),
        "",
        "The run's report:",
        "",
        *(f"- {line}" for line in report.get("headline", [])),
        f"- Distillation gain over the student trained alone: "
        f"{100 * summary['kd_gain']:+.2f} ± {100 * summary['kd_gain_standard_error']:.2f} "
        f"points (standard error, paired over the {summary['test_images']} test images)"
        if summary.get("kd_gain") is not None
        else "- No distillation gain measured.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    app.run(main)
