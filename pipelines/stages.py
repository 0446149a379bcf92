"""The stages of a run, as one table, and their bodies.

A stage reads earlier stages' artifacts through the `Context`, writes its own into the run
directory, and returns the files it wrote (relative paths, hashed into the manifest) with its
metrics. Adding a stage means one `Stage` entry and one function.
"""

import dataclasses
import json
import os
import shutil
import time
import typing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from absl import logging

import tfkd
from pipelines import config as config_lib
from pipelines import policy, report
from pipelines.context import DISTILLATION_SEED, QAD_DATA, STUDENT_DATA
from pipelines.run import RunLayout
from tfkd import export, files, quantize
from tfkd.distill import training
from tfkd.keras import keras
from tfkd.measure import batch_norm, benchmark, device, parity
from tfkd.tasks import classification

if TYPE_CHECKING:
    from pipelines.context import Context

StageResult = tuple[list[str], dict]


def teacher(ctx: "Context") -> StageResult:
    config = ctx.config
    if config.teacher_is_file:
        model = ctx.teacher_file  # loaded, checked and its input convention found before
        logging.info("%s", typing.cast(dict, ctx.teacher_input)["message"])
        if tfkd.distill.teachers.is_foreign(model):
            # A SavedModel or Keras 3 model cannot be re-saved as tf_keras: record where it is.
            ctx.use("teacher", model)
            metrics = ctx.accuracies(model)
            metrics.update(
                source=os.path.abspath(config.teacher),
                input=ctx.teacher_input,
                fingerprint=tfkd.distill.teachers.fingerprint(model),
            )
            return [], metrics
    else:
        keras.utils.set_random_seed(config.seed)
        model = ctx.build_teacher()
        learning_rate = config.learning_rate
        if config.teacher_weights:
            _train_teacher_head(ctx, model)
            learning_rate = config.finetune_learning_rate
        training.train_classifier(
            model,
            ctx.teacher_batches(),
            epochs=config.teacher_epochs,
            learning_rate=learning_rate,
            **ctx.teacher_fit_options("teacher"),
        )
    # Accuracies of what was kept: the float32 copy when training used mixed precision.
    kept = ctx.keep("teacher", model)
    metrics = ctx.accuracies(ctx.model("teacher"))
    if ctx.teacher_input:
        metrics["input"] = ctx.teacher_input
    return [kept], metrics


def _train_teacher_head(ctx: "Context", model: keras.Model) -> None:
    """A pretrained teacher's new head first, on a frozen backbone (a random head's large
    gradients would wreck the pretrained features); then the whole network is unfrozen, except
    batch normalisation, which keeps its pretrained statistics (the small-data fine-tuning
    recipe of the Keras transfer-learning guide). Resumable: the trained head is kept."""
    config = ctx.config
    done = ctx.directory.checkpoints("teacher_head", "head.h5")
    body = tfkd.models.pretrained.backbone_layers(model)
    for layer in body:
        layer.trainable = False
    if os.path.exists(done):
        model.load_weights(done)
    elif config.teacher_head_epochs:
        training.train_classifier(
            model,
            ctx.teacher_batches(),
            epochs=config.teacher_head_epochs,
            learning_rate=config.learning_rate,
            **ctx.teacher_fit_options("teacher_head"),
        )
        if ctx.chief:
            with files.atomic_path(done) as tmp:  # keeps the .h5 extension: HDF5 weights
                model.save_weights(tmp)
    for layer in body:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization) and (
            layer.name != tfkd.models.pretrained.INPUT_ADAPTER
        )


def baseline(ctx: "Context") -> StageResult:
    config = ctx.config
    model = training.train_classifier(
        ctx.fresh_student(),
        ctx.train_batches(STUDENT_DATA),
        epochs=config.student_epochs,
        learning_rate=config.learning_rate,
        **ctx.fit_options("baseline"),
    )
    kept = ctx.keep("baseline", model)
    return [kept], ctx.accuracies(ctx.model("baseline"))


def student(ctx: "Context") -> StageResult:
    config = ctx.config
    check = None
    if ctx.directory.done("baseline"):
        check = policy.check_teachers(
            ctx.model("teacher"),
            classification.correct_predictions(ctx.model("baseline"), ctx.validation),
            ctx.teacher_validation,
            config.teacher_margin_points,
            config.select_alpha,
        )
        (logging.info if check.ok else logging.warning)("%s", check.message())
    calibration = _race(ctx) if config.calibrated else None
    loss, weight = _distillation_settings(config, calibration)
    started = time.time()
    # With --loss=auto the winner's probe is the first part of this very run: its backup holds
    # the probe's last epoch, from which BackupAndRestore carries on.
    model = _distil_student(
        ctx,
        loss,
        weight,
        config.student_epochs,
        **ctx.fit_options(
            "student",
            distilled=True,
            backup=_probe_backup(calibration.candidate) if calibration else "",
        ),
    )
    kept = ctx.keep("student", model)
    metrics = ctx.accuracies(ctx.model("student"))
    metrics["teacher_check"] = check.to_dict() if check else None
    metrics["distillation_seconds"] = (
        time.time()
        - started
        + ((calibration.probe_seconds or {})[calibration.candidate] if calibration else 0.0)
    )
    metrics["calibration"] = calibration.to_dict() if calibration else None
    if calibration and ctx.chief:
        shutil.rmtree(ctx.directory.checkpoints(PROBES), ignore_errors=True)
    return [kept], metrics


PROBES = "student_probes"


def _distil_student(ctx: "Context", loss, weight: float, epochs: int, **fit) -> keras.Model:
    """A fresh student distilled for the first `epochs` of the distillation's schedule (all of
    them for the student stage, a fifth for a race's probe), from the same initial weights and
    batches every time."""
    config = ctx.config
    model = ctx.fresh_student()
    keras.utils.set_random_seed(config.seed + DISTILLATION_SEED)
    return training.distill(
        model,
        ctx.model("teacher"),
        ctx.train_batches(STUDENT_DATA, distilled=True),
        epochs=epochs,
        schedule_epochs=config.student_epochs,
        loss=loss,
        student_loss_weight=weight,
        features=config.feature_pairs,
        warmup_epochs=config.distillation_warmup_epochs,
        learning_rate=config.learning_rate,
        **fit,
    )


def _probe_backup(candidate: str) -> str:
    return f"{PROBES}/{candidate}"


def _race(ctx: "Context") -> "tfkd.distill.calibration.Calibration":
    """--loss=auto: each candidate recipe trains the first `tfkd.distill.calibration.PROBE_SHARE` of
    the distillation's epochs under the whole run's schedule, from the same weights; they are
    compared on validation (tfkd.distill.calibration.choose) and the winner's backup is kept for the
    student stage to continue. Each probe is resumable and kept once done, and so is the
    choice: a run killed later in the stage does not race again."""
    config = ctx.config
    done = ctx.directory.checkpoints(PROBES, "calibration.json")
    if os.path.exists(done):
        with open(done, encoding="utf-8") as handle:
            return tfkd.distill.calibration.Calibration.from_dict(json.load(handle))
    probe_epochs = tfkd.distill.calibration.probe_steps(config.student_epochs)
    correct, seconds = {}, {}
    for name in tfkd.distill.calibration.CANDIDATES:
        result_file = ctx.directory.checkpoints(PROBES, f"{name}.json")
        if os.path.exists(result_file):
            with open(result_file, encoding="utf-8") as handle:
                result = json.load(handle)
        else:
            started = time.time()
            probe = _distil_student(
                ctx,
                *tfkd.distill.calibration.candidate_loss(name),
                probe_epochs,
                optimizer_name=config.optimizer,
                jit_compile=config.use_xla,
                verbose=0,
                callbacks=training.callbacks(
                    backup_dir=ctx.directory.checkpoints(PROBES, name), keep_backup=True
                )
                + [
                    tfkd.progress.TrainingProgress(
                        f"student (probe: {name})", batch_size=config.batch_size
                    )
                ],
            )
            # Measured with the batch statistics of its weights as they are: the moving
            # averages still hold their start this early (tfkd.measure.batch_norm).
            measured = batch_norm.precise_batch_norm(
                probe, ctx.train_batches(STUDENT_DATA, distilled=True)
            )
            result = {
                "correct": [
                    bool(hit)
                    for hit in classification.correct_predictions(measured, ctx.validation)
                ],
                "seconds": time.time() - started,
            }
            if ctx.chief:
                files.write_text(result_file, json.dumps(result))
        correct[name] = np.array(result["correct"])
        seconds[name] = result["seconds"]
    chosen = dataclasses.replace(
        tfkd.distill.calibration.choose(correct, config.select_alpha), probe_seconds=seconds
    )
    logging.info("Distillation settings (--loss=auto): %s: %s.", chosen.candidate, chosen.reason)
    if ctx.chief:
        files.write_text(done, json.dumps(chosen.to_dict(), indent=2, sort_keys=True))
    return chosen


def _distillation_settings(config, calibration):
    """The loss and hard-label weight of distillation: the flags', or the calibrated ones."""
    if calibration is None:
        return config.distillation_loss, config.student_loss_weight
    return calibration.build_loss(), calibration.student_loss_weight


def select(ctx: "Context") -> StageResult:
    """Chooses the student that is quantized and shipped (--select)."""
    config = ctx.config
    correct = {
        name: classification.correct_predictions(ctx.model(name), ctx.validation)
        for name in ("student", "baseline")
        if ctx.directory.done(name) and config.select != "distilled"
    }
    shipped, reason, comparison = policy.select_student(
        config.select, correct.get("student"), correct.get("baseline"), config.select_alpha
    )
    logging.info(
        "Shipping the %s: %s.",
        "distilled student" if shipped == "student" else "student alone (baseline)",
        reason,
    )
    return [], {
        "shipped": shipped,
        "reason": reason,
        "policy": config.select,
        "validation": comparison,
    }


def qad(ctx: "Context") -> StageResult:
    """A QAT copy of the shipped student, fine-tuned while the float teacher still teaches."""
    config = ctx.config
    if not config.qat_epochs:
        return [], {"skipped": "--qat_epochs=0"}
    shipped = ctx.directory.metrics("select")["shipped"]
    float_student = ctx.model(shipped)
    logging.info("%s", quantize.doctor(float_student))
    start = keras.models.clone_model(float_student)
    start.set_weights(float_student.get_weights())
    model = quantize.quantize_student(start)
    # QAD keeps teaching as the student stage did (select needs it, so it has finished).
    loss, weight = _distillation_settings(
        config,
        tfkd.distill.calibration.Calibration.from_dict(
            ctx.directory.metrics("student")["calibration"]
        )
        if config.calibrated
        else None,
    )
    keras.utils.set_random_seed(config.seed + DISTILLATION_SEED)
    training.distill(
        model,
        ctx.model("teacher"),
        ctx.train_batches(QAD_DATA, distilled=True),
        epochs=config.qat_epochs,
        loss=loss,
        # A student shipped because distillation did not help is fine-tuned on labels alone.
        student_loss_weight=weight if shipped == "student" else 1.0,
        learning_rate=config.qat_learning_rate,
        **ctx.fit_options("student_qad", distilled=True),
    )
    kept = ctx.keep("student_qad", model)
    metrics = ctx.accuracies(ctx.model("student_qad"))
    metrics["from"] = shipped
    return [kept], metrics


def has_qad_student(ctx: "Context") -> bool:
    """The qad stage finished and produced a student (it records no accuracy when skipped)."""
    return ctx.directory.done("qad") and ctx.directory.metrics("qad").get("accuracy") is not None


def export_models(ctx: "Context") -> StageResult:
    config, splits = ctx.config, ctx.splits
    out = ctx.directory.export_dir()
    integer_modes = [m for m in config.modes if m in export.INTEGER_MODES]
    representative = (
        export.representative_set(splits, ctx.representative_size) if integer_modes else None
    )
    # The run's name, not its path: the card ships inside apps.
    common: dict[str, typing.Any] = dict(
        preprocessing=splits.preprocessing,
        class_names=splits.class_names,
        source_run=os.path.basename(os.path.abspath(config.out_dir)),
        progress=lambda variant: tfkd.progress.Progress(f"calibrating {variant}", summary=False),
    )
    # The `student_*` files hold the shipped student (distilled, or alone if it was better).
    # Exported first: the card's preprocessing is the student's (what an app applies).
    selection = ctx.directory.metrics("select")
    card = export.export(
        ctx.model(selection["shipped"]),
        out,
        config.modes,
        representative=representative,
        name="student",
        output=config.export_output,
        **common,
    )
    if has_qad_student(ctx) and integer_modes:
        card = export.export(
            ctx.model("student_qad"),
            out,
            integer_modes,
            name="student_qad",
            output=config.export_output,
            **common,
        )
    if config.export_teacher:
        # The teacher's file keeps logits: it can teach again (a .tflite teacher) through the
        # cache.
        card = export.export(
            ctx.model("teacher"),
            out,
            ["float32"],
            name="teacher",
            output="logits",
            **dict(common, preprocessing=ctx.teacher_splits.preprocessing),
        )
    card["shipped"] = {"model": selection["shipped"], "reason": selection["reason"]}
    card["keras3"] = _keras3_student(ctx.model(selection["shipped"]), out)
    export.write_card(out, card)
    # The model card is the verify stage's output: it fills in the accuracies.
    keras3_file = [RunLayout.exported(card["keras3"]["file"])] if card["keras3"]["file"] else []
    return (
        [RunLayout.exported(e["file"]) for e in card["variants"].values()]
        + [RunLayout.exported(export.LABELS_FILE)]
        + keras3_file
    ), {}


KERAS3_STUDENT = "student_float_keras3.keras"


def _keras3_student(model: keras.Model, out: str) -> dict:
    """The shipped float student as a Keras 3 file, for app teams whose code is Keras 3."""
    try:
        tfkd.models.keras3.save_keras3(model, os.path.join(out, KERAS3_STUDENT))
    except (tfkd.models.keras3.UnsupportedModelError, ValueError, TypeError) as error:
        # Recorded in the card and logged: the .tflite files, the product, do not depend on it.
        logging.warning("No Keras 3 copy of the shipped student: %s", error)
        return {"file": None, "reason": str(error)}
    return {
        "file": KERAS3_STUDENT,
        "inputs": "normalised as the card's preprocessing says",
        "outputs": "logits",
    }


def verify(ctx: "Context") -> StageResult:
    """Accuracy of every `.tflite` (written into the model card) and the parity gate."""
    out = ctx.directory.export_dir()
    card = export.read_card(out)
    accuracies = {}
    for name, entry in card["variants"].items():
        test = _test_for(ctx, entry)
        progress = tfkd.progress.Progress(f"verifying {name}", summary=False)
        accuracy = classification.tflite_accuracy(
            os.path.join(out, entry["file"]),
            tfkd.progress.counted(test.as_numpy_iterator(), progress, ctx.splits.sizes["test"]),
        )
        entry["accuracy"] = {"split": "test", "value": accuracy}
        accuracies[name] = accuracy
        logging.info("%s: test accuracy %.4f", name, accuracy)
    export.write_card(out, card)
    drops, failure = gate_students(ctx, accuracies, "accuracy", "accuracy")
    return [RunLayout.exported(export.CARD_FILE)], {
        "accuracy": accuracies,
        "drops": drops,
        "failure": failure,
    }


def gate_students(
    ctx, measured: dict[str, float], metric: str, metric_name: str
) -> tuple[dict[str, float], str | None]:
    """The parity gate (--max_drop_points) on the exported students' `measured` scores, by
    variant, against the shipped float student's `metric` (`metric_name` in the message): the
    drops in points, and the failure's message when a file dropped too far (None when all
    passed). Any task."""
    shipped = ctx.directory.metrics("select")["shipped"]
    reference = ctx.directory.metrics(shipped)[metric]
    students = {k: v for k, v in measured.items() if not k.startswith("teacher")}
    try:
        return (
            parity.parity_gate(
                reference,
                students,
                ctx.config.max_drop_points,
                reference_name="float Keras student",
                metric=metric_name,
            ),
            None,
        )
    except parity.ParityError as error:
        return error.drops, str(error)


def measure_variants(ctx, measure: Callable[[str, int, dict], dict]) -> dict:
    """`measure(path, threads, card_entry)` for every exported variant and thread count."""
    out = ctx.directory.export_dir()
    card = export.read_card(out)
    results: dict[str, dict] = {}
    for name, entry in card["variants"].items():
        for threads in ctx.config.threads:
            results.setdefault(name, {})[str(threads)] = measure(
                os.path.join(out, entry["file"]), threads, entry
            )
    return results


def _test_for(ctx: "Context", variant: dict):
    """The test batches at the input size of an exported variant (the teacher's may differ)."""
    size = tuple(variant["input"]["shape"][1:3])
    return ctx.teacher_test if ctx.at_teacher_size(size) else ctx.test


def host_benchmark(ctx: "Context") -> StageResult:
    first_batches = {}  # one batch of test images per input size, read once

    def measure(path, threads, entry):
        test = _test_for(ctx, entry)
        if id(test) not in first_batches:
            first_batches[id(test)] = next(iter(test))[0].numpy()
        m = benchmark.measure(
            path,
            threads=threads,
            warmup=10,
            runs=ctx.config.benchmark_runs,
            inputs=first_batches[id(test)],
        )
        logging.info(
            "%s, %d thread(s): p50 %.3f ms", os.path.basename(path), threads, m.latency.p50_ms
        )
        return m.to_dict()

    path = RunLayout.HOST_BENCHMARK
    files.write_text(
        ctx.directory.file(path),
        json.dumps(measure_variants(ctx, measure), indent=2, sort_keys=True),
    )
    return [path], {}


def device_benchmark(ctx: "Context") -> StageResult:
    config = ctx.config
    phone = device.connect(config.serial)
    info = device.fingerprint(phone)

    def measure(path, threads, entry):
        del entry  # the phone feeds its own inputs
        common = dict(threads=threads, runs=config.benchmark_runs, info=info)
        if config.benchmark_binary:
            return device.benchmark_model_on_device(
                phone, path, config.benchmark_binary, **common
            ).to_dict()
        return device.app_benchmark_on_device(phone, path, **common).to_dict()

    path = RunLayout.DEVICE_BENCHMARK
    results = {"device": info, "variants": measure_variants(ctx, measure)}
    files.write_text(ctx.directory.file(path), json.dumps(results, indent=2, sort_keys=True))
    return [path], {}


def write_report(ctx: "Context") -> StageResult:
    directory = ctx.directory
    trained = [
        s
        for s in STAGES
        if s.model and directory.done(s.name) and (s.name != "qad" or has_qad_student(ctx))
    ]
    keras_models = [
        report.KerasModel(
            name=s.model,
            model=ctx.model(s.model),
            size_bytes=kept_size(directory, s.model),
            metrics=directory.metrics(s.name),
        )
        for s in trained
    ]
    host = None
    if directory.done("benchmark"):  # not a stale file from other settings
        with open(directory.file(RunLayout.HOST_BENCHMARK), encoding="utf-8") as f:
            host = json.load(f)
    written = report.build_and_write(
        directory.path,
        ctx.splits.name,
        keras_models,
        export.read_card(directory.export_dir()),
        directory.metrics("verify"),
        host,
        ctx.config.threads[0],
        directory.metrics("select"),
        directory.metrics("student").get("teacher_check"),
        ctx.splits.sizes["test"],
        ctx.config.max_drop_points,
        ctx.config.select,
        _kd_gain(ctx),
        ctx.config.select_alpha,
    )
    return written, {}


def kept_size(directory, model: str):
    """Bytes of a model's file in the run directory; None for a teacher used where it is (a
    SavedModel or Keras 3 file has no tf_keras copy there)."""
    path = directory.file(directory.model_file(model))
    return os.path.getsize(path) if os.path.exists(path) else None


def _kd_gain(ctx: "Context"):
    """Distilled minus alone on the test images, paired (`tfkd.measure.stats.paired_difference`)."""
    if not (ctx.directory.done("student") and ctx.directory.done("baseline")):
        return None
    return tfkd.measure.stats.paired_difference(
        classification.correct_predictions(ctx.model("student"), ctx.test),
        classification.correct_predictions(ctx.model("baseline"), ctx.test),
    )


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of a run.

    Attributes:
        name: as given to --stages and recorded in the manifest.
        needs: stages whose artifacts this one cannot run without.
        uses: stages whose artifacts or results it also reads when they ran (the teacher
            check reads the baseline's). With `needs` they are its upstream: it reruns when
            one of them does (pipelines/run.py, `plan`). The settings it reads are the
            `Config` fields whose `read_by` names it.
        trains: runs in the strategy's scope on every worker; the others run on the chief
            alone, on plain copies of the models read back from the run directory.
        fn: the body.
        what: what it does, for its banner.
        model: the model it trains and keeps under this name, if any.
        epochs: the `Config` field with its number of epochs, for a stage that trains one.
        mixed_precision: may train in mixed_float16 (--mixed_precision).
    """

    name: str
    needs: tuple[str, ...]
    trains: bool
    fn: Callable[["Context"], StageResult]
    what: str
    model: str = ""
    epochs: str = ""
    mixed_precision: bool = False
    uses: tuple[str, ...] = ()

    @property
    def upstream(self) -> tuple[str, ...]:
        return self.needs + self.uses


STAGES = (
    Stage(
        "teacher",
        (),
        True,
        teacher,
        "train or load the teacher",
        model="teacher",
        epochs="teacher_epochs",
        mixed_precision=True,
    ),
    Stage(
        "baseline",
        (),
        True,
        baseline,
        "train the student alone",
        model="baseline",
        epochs="student_epochs",
        mixed_precision=True,
    ),
    Stage(
        "student",
        ("teacher",),
        True,
        student,
        "distil the student",
        model="student",
        epochs="student_epochs",
        mixed_precision=True,
        uses=("baseline",),
    ),
    Stage("select", ("student",), True, select, "choose the student to ship", uses=("baseline",)),
    # TF-MOT's fake-quant layers are float32: QAD never uses mixed precision.
    Stage(
        "qad",
        ("teacher", "select"),
        True,
        qad,
        "quantization-aware distillation",
        model="student_qad",
        epochs="qat_epochs",
        uses=("student",),
    ),
    Stage(
        "export", ("teacher", "select"), False, export_models, "export .tflite files", uses=("qad",)
    ),
    Stage(
        "verify",
        ("export",),
        False,
        verify,
        "accuracy of every .tflite (parity gate)",
        uses=("select",),
    ),
    Stage("benchmark", ("export",), False, host_benchmark, "latency on this host"),
    Stage("device", ("export",), False, device_benchmark, "latency on the phone"),
    Stage(
        "report",
        ("verify",),
        False,
        write_report,
        "write the report",
        uses=("teacher", "baseline", "student", "select", "qad", "export", "benchmark", "device"),
    ),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
BY_NAME = {s.name: s for s in STAGES}


def downstream(name: str) -> list[str]:
    """`name` and every stage that consumes its results, directly or not, in table order."""
    below = {name}
    for stage in STAGES:
        if below & set(stage.upstream):
            below.add(stage.name)
    return [s for s in STAGE_NAMES if s in below]


def upstream(name: str) -> set[str]:
    """Every stage whose results `name` consumes, directly or not."""
    found: set[str] = set()
    for direct in BY_NAME[name].upstream:
        found |= {direct} | upstream(direct)
    return found


def undeclared_reads(stage: str, reads) -> set[str]:
    """The settings `stage` was seen to read (`reads`, as the manifest records them) that
    neither it nor a stage upstream of it declares (`Config` fields' `read_by`): a change to
    one would not rerun it. The tests hold every stage to an empty set."""
    return set(reads) - config_lib.declared_reads(upstream(stage) | {stage})


ALL = "all"
# The one stage that needs a phone: it runs only where --serial names one.
DEVICE = "device"


def selected(requested: Sequence[str], serial: str | None) -> list[str]:
    """The stages a run executes, in table order: every stage for 'all' (the phone's only with
    `serial`), else the named ones. `ValueError` naming the flag for an unknown name, for 'all'
    beside names, or for the phone's stage without a phone."""
    unknown = [s for s in requested if s not in STAGE_NAMES and s != ALL]
    if unknown or (ALL in requested and len(requested) > 1):
        raise ValueError(
            f"--stages={','.join(requested)}: give '{ALL}' or stages from {list(STAGE_NAMES)}."
        )
    if DEVICE in requested and not serial:
        raise ValueError(f"--stages includes {DEVICE} but no --serial was given.")
    if tuple(requested) == (ALL,):
        return [s for s in STAGE_NAMES if s != DEVICE or serial]
    return [s for s in STAGE_NAMES if s in requested]


def measuring(serial: str | None) -> list[str]:
    """The stages that measure a finished run again: the host, the phone with `serial`, and
    the report."""
    return selected(["benchmark", "report"] + ([DEVICE] if serial else []), serial)
