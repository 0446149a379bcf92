"""The pipeline on a detection set (`--dataset=coco:PATH`): the same stage table, run directory,
manifest and reuse as classification, with the detector's stages (pipelines/detection/).

The slow tests share one tiny run in process (a generated set at 64x64, a few epochs) and check
its mechanics against an independent client: MediaPipe's ObjectDetector finds in the exported
files what the verify stage scored. The fast tests check the settings a detection run refuses,
before anything is written."""

import dataclasses
import json
import os

import numpy as np
import pytest

import tfkd
from pipelines import config as config_lib
from pipelines import scheduler, stages
from pipelines.config import Config
from pipelines.detection.context import DetectionContext
from pipelines.stages import STAGE_NAMES
from tests.conftest import CIFAR_SAMPLE
from tests.test_detection_export import mediapipe_detections
from tests.test_pipeline import _main
from tfkd.keras import keras
from tfkd.tasks.detection import data, export, metrics, models
from tools.make_detection_set import make_detection_set

SIZE, CLASSES = 64, ["airplane", "frog", "truck"]
TINY = dict(
    image_size=(SIZE, SIZE),
    teacher="detector_large",
    student="detector_small",
    teacher_epochs=4,
    student_epochs=2,
    qat_epochs=1,
    batch_size=16,
    learning_rate=0.003,
    temperature=2.0,
    student_loss_weight=0.5,
    modes=("float32", "int8_io_uint8"),
    max_drop_points=100.0,
    benchmark_runs=3,
)


@pytest.fixture(scope="module")
def detection_set(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("detection") / "set"
    make_detection_set(
        CIFAR_SAMPLE, str(root), CLASSES, {"train": 48, "val": 12}, SIZE, 2, "coco", seed=0
    )
    return f"coco:{root}"


@pytest.fixture(scope="module")
def finished(detection_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = Config(dataset=detection_set, out_dir=str(out), **TINY)
    return config, scheduler.execute(config)


@pytest.mark.slow
def test_a_detection_run_goes_to_a_report_mediapipe_agrees_and_a_rerun_reuses_it(
    finished, detection_set, mediapipe_python, tmp_path
):
    config, results = finished
    out = config.out_dir
    assert set(results) == set(STAGE_NAMES) - {"device"}
    for relative in (
        "teacher/teacher.keras",
        "baseline/baseline.keras",
        "student/student.keras",
        "student_qad/student_qad_weights.h5",
        "tflite/student_float32.tflite",
        "tflite/student_int8_io_uint8.tflite",
        "tflite/student_qad_int8_io_uint8.tflite",
        "tflite/teacher_float32.tflite",
        "tflite/labels.txt",
        "benchmark/host.json",
        "report.md",
        "pareto.png",
    ):
        assert os.path.getsize(os.path.join(out, relative)) > 0, relative
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["metric"] == "mAP"
    gain = report["summary"]["kd_gain_test"]
    assert gain["images"] == 12 and gain["interval"][0] <= gain["difference"] <= gain["interval"][1]
    with open(os.path.join(out, "tflite", "labels.txt"), encoding="utf-8") as f:
        assert f.read().split() == CLASSES

    # The stages scored the models they saved, on the test images (the dataset's val/), not on
    # training or validation images: the same detection and scoring code, fed from outside.
    test = data.load(detection_set)["val"]
    images = models.images(test, SIZE)
    normalized = models.preprocessing(SIZE).normalize(images).numpy()
    sizes = [(i.width, i.height) for i in test.images]
    for name in ("teacher", "student"):
        model = keras.models.load_model(os.path.join(out, name, f"{name}.keras"))
        found = models.detect(model, models.anchors(SIZE), normalized, sizes)
        assert results[name]["map"] == pytest.approx(metrics.coco_map(test, found)["map"], abs=1e-6)

    # Every exported student, as MediaPipe (the app's client) runs it, finds what the verify
    # stage scored with LiteRT: the same best score, and each of LiteRT's detections that lies
    # inside the image (MediaPipe does not clip a box to the image as COCO scoring does) with
    # its box, name and score. MediaPipe floors the origin and the size to whole pixels, so a
    # far corner may be up to 2 pixels short.
    prep = models.preprocessing(SIZE)
    for variant in ("student_float32", "student_int8_io_uint8", "student_qad_int8_io_uint8"):
        path = os.path.join(out, "tflite", f"{variant}.tflite")
        seen = mediapipe_detections(mediapipe_python, path, images, tmp_path, CLASSES)
        verified = export.run_tflite(path, images, prep, sizes)
        compared = 0
        for app, ours in zip(seen, verified):
            assert len(app.scores) and np.isclose(app.scores.max(), ours.scores.max(), atol=1e-4)
            for box, label, score in zip(ours.boxes, ours.classes, ours.scores):
                if np.all((box > 0) & (box < SIZE)):
                    same = (
                        np.all(np.abs(app.boxes - box) <= 2.0, axis=1)
                        & (app.classes == label)
                        & np.isclose(app.scores, score, atol=1e-4)
                    )
                    assert same.any(), (variant, box, label, score)
                    compared += 1
        assert compared > 0, variant

    # Each stage read only settings it (or a stage upstream) declares: changing any other
    # cannot leave a stale result behind.
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        recorded = json.load(f)["stages"]
    assert all(not stages.undeclared_reads(s, e.get("reads", ())) for s, e in recorded.items())
    # A rerun reuses every stage; a changed parity limit reruns only what reads it.
    again = scheduler.plan(config, scheduler.run.RunDirectory(out), list(results))
    assert not [d.stage for d in again if d.rerun]
    looser = dataclasses.replace(config, max_drop_points=50.0)
    changed = scheduler.plan(looser, scheduler.run.RunDirectory(out), list(results))
    assert [d.stage for d in changed if d.rerun] == ["verify", "report"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(loss="kd"), "--loss=kd"),
        (dict(flip=True, pad_crop=4), "--flip=True --pad_crop=4"),
        (dict(teacher="cnn_large"), "--teacher=cnn_large is not a detector"),
        (dict(image_size=(48, 32)), "square input"),
        (dict(image_size=(40, 40)), "multiple of 16"),
        (dict(image_size=()), "--image_size=(unset)"),
        (dict(modes=("float32", "float16")), "--modes=float32,float16"),
        (dict(jit_compile="on"), "--jit_compile=on"),
    ],
)
def test_a_detection_run_refuses_settings_it_does_not_take(overrides, message, tmp_path):
    settings = dict(TINY, dataset=f"coco:{tmp_path}", out_dir=str(tmp_path / "run"))
    settings.update(overrides)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config(**settings)
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
def test_detection_training_stages_run_under_a_two_replica_mirrored_strategy_in_mixed_precision(
    detection_set, mirrored_strategy, tmp_path
):
    """The set-up of a machine with several GPUs. The loss's share per replica is
    tests/test_distribute.py's; here the stages: models made in the strategy's scope, training
    and distillation across replicas in float16 with float32 variables, and the kept models:
    float32, and, read back and measured again as their stages measured them (across the
    replicas), they score what the stages recorded (each replica's batch-norm statistics are
    settled to their mean first)."""
    stages_run = ("teacher", "student")
    # float16 on a CPU is emulated: the small detector teaches (detector_large takes longer).
    settings = dict(
        TINY, teacher="detector_small", teacher_epochs=1, student_epochs=1, mixed_precision="on"
    )
    config = Config(dataset=detection_set, out_dir=str(tmp_path), stages=stages_run, **settings)
    assert config.use_mixed_precision
    results = scheduler.execute(config, mirrored_strategy)
    assert keras.mixed_precision.global_policy().name == "float32"
    ctx = DetectionContext(dataclasses.replace(config, stages=("all",)))
    for name in stages_run:
        with mirrored_strategy.scope():
            kept = keras.models.load_model(tmp_path / name / f"{name}.keras", safe_mode=True)
        assert {layer.dtype_policy.name for layer in kept.layers} == {"float32"}, name
        scores = ctx.scores(kept)
        for metric in ("map", "val_map"):
            assert scores[metric] == pytest.approx(results[name][metric], abs=1e-9), (name, metric)


def test_a_detection_set_that_is_not_there_says_how_to_build_the_generated_one(tmp_path):
    missing = tmp_path / "detection_set"
    config = Config(dataset=f"coco:{missing}", out_dir=str(tmp_path / "run"), **TINY)
    with pytest.raises(ValueError) as raised:
        scheduler.execute(config)
    message = str(raised.value)
    assert message.startswith(f"--dataset=coco:{missing}: {missing} does not exist. Fix:")
    assert f"python -m tools.make_detection_set --source=PATH/cifar10 --out={missing}" in message
    assert not os.path.exists(tmp_path / "run")


def test_a_detection_set_without_a_test_split_fails_before_the_run_directory(
    tmp_path,
):
    root = tmp_path / "set"
    make_detection_set(CIFAR_SAMPLE, str(root), CLASSES, {"train": 4}, SIZE, 1, "yolo", seed=0)
    config = Config(dataset=f"yolo:{root}", out_dir=str(tmp_path / "run"), **TINY)
    with pytest.raises(ValueError, match=r"--dataset=yolo:.*no val/ split.*ROOT/val/"):
        scheduler.execute(config)
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
def test_a_trained_detector_file_teaches_a_stage_alone_repeats_and_a_wrong_file_is_refused(
    finished, tmp_path
):
    """(In the slow suite: it reads the finished run of the test above.)"""
    config, results = finished
    trained = os.path.join(config.out_dir, "teacher", "teacher.keras")
    again = dataclasses.replace(
        config, teacher=trained, out_dir=str(tmp_path / "from_file"), stages=("teacher",)
    )
    loaded = scheduler.execute(again)["teacher"]
    assert loaded["map"] == pytest.approx(results["teacher"]["map"], abs=1e-9)
    assert loaded["val_map"] == pytest.approx(results["teacher"]["val_map"], abs=1e-9)

    # --isolate_stages: after the teacher stage the program re-executes itself, and the student
    # alone, trained in that fresh process, scores what it scored in the run's one process.
    isolated = dataclasses.replace(
        again,
        out_dir=str(tmp_path / "isolated"),
        stages=("teacher", "baseline"),
        isolate_stages=True,
    )
    program = _main(*config_lib.to_flags(isolated))
    assert program.returncode == 0, program.stderr[-3000:]
    with open(os.path.join(isolated.out_dir, "logs", "run.log"), encoding="utf-8") as f:
        assert "Continuing the run in a fresh process from stage baseline" in f.read()
    with open(os.path.join(isolated.out_dir, "manifest.json"), encoding="utf-8") as f:
        recorded = json.load(f)["stages"]
    assert recorded["baseline"]["metrics"]["map"] == results["baseline"]["map"]

    other_size = tmp_path / "other_size.keras"
    models.build("detector_large", SIZE * 2, len(CLASSES))[0].save(other_size)
    refused = dataclasses.replace(again, teacher=str(other_size), out_dir=str(tmp_path / "no"))
    with pytest.raises(ValueError, match=r"--teacher=.*other_size.keras takes \(128, 128, 3\)"):
        scheduler.execute(refused)
    assert not os.path.exists(tmp_path / "no")


class PowerCut(Exception):
    """Ends a run in the middle of an epoch's end, after its backup was written."""


@pytest.mark.slow
def test_an_interrupted_detector_training_resumes_from_its_last_epoch(
    detection_set, tmp_path, monkeypatch
):
    config = Config(dataset=detection_set, out_dir=str(tmp_path), stages=("teacher",), **TINY)
    original = tfkd.progress.TrainingProgress.on_epoch_end
    epochs = []

    def interrupted(self, epoch, logs=None):
        original(self, epoch, logs)
        epochs.append(epoch)
        if epochs == [0, 1, 2]:
            raise PowerCut()

    monkeypatch.setattr(tfkd.progress.TrainingProgress, "on_epoch_end", interrupted)
    with pytest.raises(PowerCut):
        scheduler.execute(config)
    assert "teacher" not in json.loads((tmp_path / "manifest.json").read_text())["stages"]
    epochs.clear()
    scheduler.execute(config)
    # Keras counts epochs from 0: the rerun trained epochs 4 to the last only.
    assert epochs == list(range(3, config.teacher_epochs))
