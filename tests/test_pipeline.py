import dataclasses
import json
import os
import subprocess
import sys

import pytest

from pipelines import distill
from tfkd.keras import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "change, message",
    [({"student": "resnet19"}, "--student=resnet19 is not a registered model"),
     ({"teacher_epochs": 0}, "--teacher_epochs must be >= 1"),
     ({"temperature": 0.0}, "temperature"),
     ({"student_loss_weight": 1.5}, r"--student_loss_weight must be in \[0, 1\]"),
     ({"learning_rate": -1.0}, "--learning_rate must be > 0"),
     ({"pad_crop": -2}, "--pad_crop must be >= 0"),
     ({"qat_epochs": -1}, "--qat_epochs must be >= 0"),
     ({"modes": ("float32", "int4")}, r"Unknown quantization mode 'int4'. Available"),
     ({"max_drop_points": -0.5}, "--max_drop_points must be >= 0")],
)
def test_bad_configuration_is_rejected_before_training(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(distill.Config(), **change).validate()


@pytest.mark.slow
def test_run_writes_models_tflite_files_and_results(tmp_path):
    config = distill.Config(teacher_epochs=3, student_epochs=3, qat_epochs=1,
                            modes=("float32", "int8"), max_drop_points=100.0,
                            out_dir=str(tmp_path))
    summary = distill.run(config)
    assert set(summary["test_accuracy"]) == {"teacher", "baseline", "student", "student_qad"}
    assert all(0.1 <= a <= 1.0 for a in summary["test_accuracy"].values())
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["tflite"] == summary["tflite"]
    assert set(summary["tflite"]) == {"student_float32", "student_int8", "student_qad_int8"}
    card = json.loads((tmp_path / "tflite" / "model_card.json").read_text())
    for name, variant in summary["tflite"].items():
        assert card["variants"][name]["accuracy"]["value"] == variant["accuracy"]
        assert summary["parity_drops"][name] == pytest.approx(
            100 * (summary["test_accuracy"]["student"] - variant["accuracy"]))
    assert (tmp_path / "tflite" / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    assert json.loads((tmp_path / "config.json").read_text())["teacher_epochs"] == 3
    for name in ("teacher", "baseline", "student"):
        model = keras.models.load_model(tmp_path / name / f"{name}.keras", safe_mode=True)
        assert model.output_shape == (None, 10)
    assert not [f for f in os.listdir(tmp_path / "student") if ".tmp" in f]


def _main(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "pipelines.distill", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_main_rejects_bad_flags_with_the_fix():
    result = _main("--student_loss_weight=2", "--out_dir=/nonexistent/never/created")
    assert result.returncode != 0
    assert "--student_loss_weight must be in [0, 1]" in result.stderr
    assert not os.path.exists("/nonexistent/never/created")


@pytest.mark.slow
def test_main_with_the_readme_flagfile_prints_all_accuracies(tmp_path):
    result = _main("--flagfile=pipelines/configs/digits.flags", "--teacher_epochs=1",
                   "--student_epochs=1", "--qat_epochs=1", "--modes=float32,int8_io_uint8",
                   "--max_drop_points=100", f"--out_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    for line in ("teacher  (cnn_large)", "student alone (cnn_small)",
                 "distilled student (cnn_small)", "distillation gain", "student_qad_int8_io_uint8",
                 "Parity gate: every .tflite within 100.00 points"):
        assert line in result.stdout
    flags_text = (tmp_path / "flags.txt").read_text()
    assert "--teacher_epochs=1" in flags_text and f"--out_dir={tmp_path}" in flags_text
