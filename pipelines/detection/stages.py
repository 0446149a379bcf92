"""The bodies of the stages of a detection run: the same stage table, run directory, manifest,
resume and banners as classification (pipelines/stages.py, pipelines/scheduler.py), with the
detector's training, distillation, export, metric and report.

Every verdict (the teacher check, --select=best, the distillation gain) is a paired bootstrap of
COCO mAP on the same images (`tfkd.tasks.detection.metrics.paired_map_difference`)."""

import json
import os
from typing import TYPE_CHECKING

from absl import logging

from pipelines import stages as classification_stages
from pipelines.context import stage_callbacks
from pipelines.detection import report
from pipelines.detection.context import QAD_DATA, STUDENT_DATA, TEACHER_DATA
from pipelines.run import RunLayout
from tfkd import export, files, quantize
from tfkd.keras import keras
from tfkd.measure import benchmark
from tfkd.tasks.detection import export as detection_export
from tfkd.tasks.detection import metrics, models

if TYPE_CHECKING:
    from pipelines.detection.context import DetectionContext

StageResult = tuple[list[str], dict]
# Resamplings of the images behind each paired verdict.
RESAMPLES = 200


def _fit(ctx: "DetectionContext", trainer, stage: str, epochs: int, learning_rate: float, seed):
    config = ctx.config
    return models.fit(
        trainer,
        ctx.normalized("train"),
        ctx.targets(),
        epochs,
        batch_size=config.batch_size,
        learning_rate=learning_rate,
        optimizer_name=config.optimizer,
        seed=config.seed + seed,
        callbacks=stage_callbacks(ctx.directory, stage, config.batch_size),
    )


def _distiller(ctx: "DetectionContext", student, student_loss_weight: float):
    """`student` trained on the labels at `student_loss_weight` and on the run's teacher."""
    return models.DetectionDistiller(
        student, ctx.model("teacher"), ctx.anchors, student_loss_weight, ctx.config.temperature
    )


def teacher(ctx: "DetectionContext") -> StageResult:
    config = ctx.config
    if ctx.teacher_file is not None:
        # Trained already: kept as this run's copy, so later stages read it as any teacher.
        model = ctx.teacher_file
    else:
        keras.utils.set_random_seed(config.seed + TEACHER_DATA)
        model = ctx.build_teacher()
        _fit(
            ctx,
            models.DetectorTrainer(model),
            "teacher",
            config.teacher_epochs,
            config.learning_rate,
            TEACHER_DATA,
        )
    kept = ctx.keep("teacher", model)
    return [kept], ctx.scores(ctx.model("teacher"))


def baseline(ctx: "DetectionContext") -> StageResult:
    config = ctx.config
    model = ctx.fresh_student()
    _fit(
        ctx,
        models.DetectorTrainer(model),
        "baseline",
        config.student_epochs,
        config.learning_rate,
        STUDENT_DATA,
    )
    kept = ctx.keep("baseline", model)
    return [kept], ctx.scores(ctx.model("baseline"))


def _compare(ctx: "DetectionContext", a: str, b: str, split: str) -> dict:
    """mAP of model `a` minus model `b` on `split`, paired over its images."""
    return metrics.paired_map_difference(
        ctx.splits[split],
        ctx.detections(ctx.model(a), split),
        ctx.detections(ctx.model(b), split),
        RESAMPLES,
        ctx.config.seed,
    )


def _teacher_check(ctx: "DetectionContext") -> dict:
    """Whether the teacher beats the student alone on validation by --teacher_margin_points,
    beyond noise: a teacher that does not has little to teach."""
    config = ctx.config
    comparison = _compare(ctx, "teacher", "baseline", "validation")
    ok = (
        comparison["verdict"] == "better"
        and 100 * comparison["difference"] >= config.teacher_margin_points
    )
    message = (
        "Teacher check: the teacher minus the student alone on validation: "
        + report.difference(comparison)
        + (
            "."
            if ok
            else f"; not {config.teacher_margin_points:g} mAP points better beyond noise, so "
            "distillation has little to gain: train the teacher longer, pick a larger one, or "
            "start it from ImageNet weights (--teacher_weights=imagenet)."
        )
    )
    return {"ok": ok, "comparison": comparison, "message": message}


def student(ctx: "DetectionContext") -> StageResult:
    config = ctx.config
    check = None
    if ctx.directory.done("baseline"):
        check = _teacher_check(ctx)
        (logging.info if check["ok"] else logging.warning)("%s", check["message"])
    model = ctx.fresh_student()
    _fit(
        ctx,
        _distiller(ctx, model, config.student_loss_weight),
        "student",
        config.student_epochs,
        config.learning_rate,
        STUDENT_DATA,
    )
    kept = ctx.keep("student", model)
    scores = ctx.scores(ctx.model("student"))
    scores["teacher_check"] = check
    return [kept], scores


def select(ctx: "DetectionContext") -> StageResult:
    """The student that is quantized and shipped (--select): the distilled one unless the
    student alone is better beyond noise on validation (best), or as told."""
    policy = ctx.config.select
    comparison = None
    if policy == "best" and ctx.directory.done("baseline"):
        comparison = _compare(ctx, "student", "baseline", "validation")
        shipped = "baseline" if comparison["verdict"] == "worse" else "student"
        reason = (
            "the student alone is better than the distilled student beyond noise on validation"
            if shipped == "baseline"
            else "the distilled student is not worse than the student alone beyond noise on "
            "validation"
        ) + f" ({comparison['verdict']}: {report.difference(comparison)})"
    elif policy == "baseline":
        if not ctx.directory.done("baseline"):
            raise ValueError("--select=baseline needs the baseline stage (the student alone).")
        shipped, reason = "baseline", "--select=baseline"
    else:
        shipped = "student"
        reason = "--select=distilled" if policy == "distilled" else "no baseline to compare with"
    logging.info("Shipping the %s: %s.", shipped, reason)
    return [], {"shipped": shipped, "reason": reason, "policy": policy, "validation": comparison}


def qad(ctx: "DetectionContext") -> StageResult:
    """A QAT copy of the shipped detector, fine-tuned while the float teacher still teaches."""
    config = ctx.config
    if not config.qat_epochs:
        return [], {"skipped": "--qat_epochs=0"}
    shipped = ctx.directory.metrics("select")["shipped"]
    float_student = ctx.model(shipped)
    start = keras.models.clone_model(float_student)
    start.set_weights(float_student.get_weights())
    model = quantize.quantize_student(start)
    keras.utils.set_random_seed(config.seed + QAD_DATA)
    _fit(
        ctx,
        # A student shipped because distillation did not help is fine-tuned on labels alone.
        _distiller(ctx, model, config.student_loss_weight if shipped == "student" else 1.0),
        "student_qad",
        config.qat_epochs,
        config.qat_learning_rate,
        QAD_DATA,
    )
    kept = ctx.keep("student_qad", model)
    scores = ctx.scores(ctx.model("student_qad"))
    scores["from"] = shipped
    return [kept], scores


def has_qad_student(ctx: "DetectionContext") -> bool:
    return ctx.directory.done("qad") and "map" in ctx.directory.metrics("qad")


def export_models(ctx: "DetectionContext") -> StageResult:
    """`.tflite` detectors with TFLite_Detection_PostProcess and object-detector metadata: the
    shipped student in every --modes, the QAD student in the integer one, the teacher in
    float32 (--export_teacher); labels.txt and the model card beside them."""
    config = ctx.config
    out = ctx.directory.export_dir()
    os.makedirs(out, exist_ok=True)
    representative = ctx.normalized("train")[: ctx.representative_size]
    selection = ctx.directory.metrics("select")
    exports = [(selection["shipped"], "student", list(config.modes))]
    if has_qad_student(ctx):
        exports.append(("student_qad", "student_qad", [m for m in config.modes if m != "float32"]))
    if config.export_teacher:
        exports.append(("teacher", "teacher", ["float32"]))
    card: dict = {
        "format_version": export.CARD_VERSION,
        "task": "object detection",
        "labels_file": export.LABELS_FILE,
        "labels": list(ctx.class_names),
        "preprocessing": {
            **ctx.preprocessing.to_dict(),
            "formula": "input = (raw_pixel * scale - mean) / std, per channel",
        },
        "outputs": "TFLite_Detection_PostProcess: boxes [top, left, bottom, right] ratios, "
        "classes, scores, count",
        "source_run": os.path.basename(os.path.abspath(config.out_dir)),
        "representative_set": {"images": len(representative), "split": "train"},
        "variants": {},
    }
    written = []
    for model_name, name, modes in exports:
        model = ctx.model(model_name)
        for mode in modes:
            path = os.path.join(out, f"{name}_{mode}.tflite")
            content = detection_export.convert(
                model,
                ctx.anchors,
                ctx.class_names,
                ctx.preprocessing,
                mode,
                representative if mode != "float32" else None,
                name=name,
            )
            entry = export.write_tflite(path, content)
            entry.update(
                mode=mode,
                quantization=None if mode == "float32" else "int8",
                quantization_aware=quantize.is_quantization_aware(model),
                map=None,
            )
            card["variants"][f"{name}_{mode}"] = entry
            written.append(RunLayout.exported(entry["file"]))
    files.write_text(os.path.join(out, export.LABELS_FILE), "\n".join(ctx.class_names) + "\n")
    card["shipped"] = {"model": selection["shipped"], "reason": selection["reason"]}
    export.write_card(out, card)
    return written + [RunLayout.exported(export.LABELS_FILE)], {}


def verify(ctx: "DetectionContext") -> StageResult:
    """COCO mAP of every `.tflite` on the test images (in the model card) and the parity gate
    on mAP against the float Keras student."""
    out = ctx.directory.export_dir()
    card = export.read_card(out)
    found: dict[str, float] = {}
    scores = {}
    for name, entry in card["variants"].items():
        detections = detection_export.run_tflite(
            os.path.join(out, entry["file"]),
            ctx.images("test"),
            ctx.preprocessing,
            ctx.original_sizes("test"),
        )
        scores[name] = metrics.coco_map(ctx.splits["test"], detections)
        entry["map"] = {"split": "test", **scores[name]}
        found[name] = scores[name]["map"]
        logging.info("%s: test mAP %.4f (mAP@.5 %.4f)", name, found[name], scores[name]["map50"])
    export.write_card(out, card)
    drops, failure = classification_stages.gate_students(ctx, found, "map", "mAP")
    return [RunLayout.exported(export.CARD_FILE)], {
        "accuracy": found,
        "scores": scores,
        "drops": drops,
        "failure": failure,
    }


def host_benchmark(ctx: "DetectionContext") -> StageResult:
    """Latency of every `.tflite` on this host with LiteRT, the post-processing included, fed
    a test image."""
    inputs = ctx.normalized("test")[:1]

    def measure(path, threads, entry):
        del entry
        m = benchmark.measure(
            path, threads=threads, warmup=10, runs=ctx.config.benchmark_runs, inputs=inputs
        )
        logging.info(
            "%s, %d thread(s): p50 %.3f ms", os.path.basename(path), threads, m.latency.p50_ms
        )
        return m.to_dict()

    path = RunLayout.HOST_BENCHMARK
    files.write_text(
        ctx.directory.file(path),
        json.dumps(classification_stages.measure_variants(ctx, measure), indent=2, sort_keys=True),
    )
    return [path], {}


def write_report(ctx: "DetectionContext") -> StageResult:
    directory = ctx.directory
    trained = {
        name: directory.metrics(stage)
        for stage, name in (
            ("teacher", "teacher"),
            ("baseline", "baseline"),
            ("student", "student"),
            ("qad", "student_qad"),
        )
        if directory.done(stage) and (stage != "qad" or has_qad_student(ctx))
    }
    host = None
    if directory.done("benchmark"):
        with open(directory.file(RunLayout.HOST_BENCHMARK), encoding="utf-8") as f:
            host = json.load(f)
    gain = (
        _compare(ctx, "student", "baseline", "test")
        if directory.done("student") and directory.done("baseline")
        else None
    )
    written = report.build_and_write(
        directory.path,
        ctx.config.dataset,
        {
            name: (ctx.model(name), classification_stages.kept_size(directory, name), m)
            for name, m in trained.items()
        },
        export.read_card(directory.export_dir()),
        directory.metrics("verify"),
        host,
        ctx.config.threads[0],
        directory.metrics("select"),
        gain,
        ctx.sizes(),
        ctx.config.max_drop_points,
    )
    return written, {}


BODIES = {
    "teacher": teacher,
    "baseline": baseline,
    "student": student,
    "select": select,
    "qad": qad,
    "export": export_models,
    "verify": verify,
    "benchmark": host_benchmark,
    "device": classification_stages.device_benchmark,
    "report": write_report,
}
