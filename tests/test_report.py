"""Tests of pipelines/report.py: the findings, the headline and the files of a report."""

import json

import pytest

from pipelines import report
from tfkd.keras import keras

SELECTED = {
    "shipped": "student",
    "reason": "the distilled student is at least as good",
    "policy": "best",
}
VERIFY = {
    "accuracy": {"student_float32": 0.9, "student_int8": 0.88},
    "drops": {"student_float32": 0.0, "student_int8": 2.0},
}


def _tiny_model():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3)(inputs))


def test_summary_gain_and_standard_error_follow_their_formulas():
    accuracy = {
        "student": 0.9,
        "baseline": 0.85,
        "teacher": 0.95,
        "student_int8": 0.88,
        "student_qad_int8": 0.895,
    }
    summary = report.summarize(
        accuracy, VERIFY, SELECTED, None, test_images=400, max_drop_points=1.0, measured=True
    )
    assert summary["kd_gain"] == pytest.approx(0.05)
    assert summary["qad_gain_over_ptq"] == pytest.approx(0.015)
    assert summary["standard_error"] == pytest.approx((0.9 * 0.1 / 400) ** 0.5)
    assert summary["parity"]["failures"] == {"student_int8": 2.0}
    assert "CPU" in summary["measured_on"]
    lines = report.headline(summary, accuracy, "best")
    assert lines[0].startswith("Shipped the distilled student")
    assert "90.00% vs student alone 85.00% vs teacher 95.00% on 400 test images" in lines[1]
    assert "±1.50 points" in lines[1]


def test_headline_says_when_distillation_did_not_help_and_warns_about_the_teacher():
    accuracy = {"student": 0.8, "baseline": 0.85, "teacher": 0.86}
    check = {"ok": False, "message": "Teacher check: teacher not 1.0 points better"}
    summary = report.summarize(
        accuracy,
        VERIFY,
        dict(SELECTED, shipped="baseline"),
        check,
        test_images=100,
        max_drop_points=1.0,
        measured=False,
    )
    lines = report.headline(summary, accuracy, "best")
    assert lines[0] == "WARNING: Teacher check: teacher not 1.0 points better"
    assert lines[1].startswith("Distillation did not help")
    assert summary["measured_on"] is None
    forced = report.headline(summary, accuracy, "baseline")
    assert forced[1].startswith("Shipped the student alone")


def test_build_and_write_reports_every_model_and_marks_qad(tmp_path):
    model = _tiny_model()
    keras_models = [
        report.KerasModel("student", model, 1000, {"accuracy": 0.9}),
        report.KerasModel("baseline", model, 1000, {"accuracy": 0.85}),
        report.KerasModel("student_qad", model, 900, {"accuracy": 0.91, "from": "student"}),
    ]
    card = {
        "variants": {
            "student_float32": {
                "quantization": None,
                "size_bytes": 4000,
                "mode": "float32",
                "quantization_aware": False,
            },
            "student_qad_int8": {
                "quantization": "int8",
                "size_bytes": 1500,
                "mode": "int8",
                "quantization_aware": True,
            },
        }
    }
    verify = {
        "accuracy": {"student_float32": 0.9, "student_qad_int8": 0.905},
        "drops": {"student_float32": 0.0, "student_qad_int8": -0.5},
    }
    latency = {"mean_ms": 1.0, "p50_ms": 0.9, "p90_ms": 1.2, "p99_ms": 1.5}
    host = {name: {"1": {"cost": {"params": 15}, "latency": latency}} for name in card["variants"]}
    written = report.build_and_write(
        str(tmp_path),
        "digits",
        keras_models,
        card,
        verify,
        host,
        1,
        SELECTED,
        None,
        359,
        1.0,
        "best",
    )
    assert written == ["report.json", "report.md", "pareto.png"]
    data = json.loads((tmp_path / "report.json").read_text())
    by_name = {m["name"]: m for m in data["models"]}
    assert by_name["student_qad_int8"]["fine_tuned_from"] == "student"
    assert by_name["student_float32"]["fine_tuned_from"] is None
    assert by_name["student"]["params"] == model.count_params()
    assert by_name["student_qad_int8"]["latency_ms"]["p50"] == 0.9
    markdown = (tmp_path / "report.md").read_text()
    assert "| student_qad_int8 | tflite | int8 (QAD) | 90.50 |" in markdown
    assert "Distillation gain over the student trained alone: +5.00 points" in markdown
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_entry_refuses_unknown_formats():
    with pytest.raises(ValueError, match="`format` must be one of"):
        report.model_entry("m", "onnx", None, 0.5, 1, 1)
    with pytest.raises(ValueError, match="`quantization` must be one of"):
        report.model_entry("m", "tflite", "int4", 0.5, 1, 1)


def test_terminal_summary_prints_the_report_and_a_parity_failure(tmp_path):
    (tmp_path / "report.md").write_text("# tfkd report: digits\n")
    text = report.terminal_summary(str(tmp_path), "student_int8 lost 3 points")
    assert text.startswith("# tfkd report: digits")
    assert "Parity gate failed:\nstudent_int8 lost 3 points" in text
    assert f"Run directory: {tmp_path}" in text
