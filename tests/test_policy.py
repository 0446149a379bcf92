"""Tests of the pipeline's policy: the teacher check and which student is shipped."""

import pytest

import tfkd
from pipelines import policy
from tfkd.keras import keras


def test_teacher_check_flags_members_within_the_margin():
    check = policy.TeacherCheck({"strong": 0.95, "weak": 0.905}, 0.90, margin_points=1.0)
    assert check.weak == ["weak"] and not check.ok
    assert "weak not 1.0 points better" in check.message()
    assert "--student_loss_weight" in check.message()
    assert policy.TeacherCheck({"strong": 0.95}, 0.90, 1.0).ok


def test_check_teachers_evaluates_each_ensemble_member():
    splits = tfkd.data.load("digits")
    test = tfkd.data.batches(splits.test, splits.preprocessing, 256)
    keras.utils.set_random_seed(1)
    student = tfkd.models.build("cnn_small", (8, 8, 1), 10)
    untrained = tfkd.models.build("cnn_tiny", (8, 8, 1), 10)
    check = policy.check_teachers([student, untrained], 0.5, test, margin_points=1.0)
    assert check.teacher_accuracy[student.name] == tfkd.evaluate.keras_accuracy(student, test)
    # Two untrained networks: both sit near chance, far below a 0.5 baseline.
    assert check.weak == [student.name, untrained.name]
    assert policy.check_teachers(student, 0.0, test, margin_points=1.0).ok


@pytest.mark.parametrize("rule, distilled, baseline, shipped", [
    ("best", 0.90, 0.92, "baseline"), ("best", 0.92, 0.92, "student"),
    ("best", 0.93, 0.92, "student"), ("distilled", 0.80, 0.92, "student"),
    ("baseline", 0.99, 0.92, "baseline")])
def test_select_student(rule, distilled, baseline, shipped):
    chosen, reason = policy.select_student(rule, distilled, baseline)
    assert chosen == shipped
    if rule == "best":
        assert f"{100 * distilled:.2f}% vs {100 * baseline:.2f}%" in reason
    else:
        assert reason == f"--select={rule}"


def test_select_student_errors():
    with pytest.raises(ValueError, match=r"--select=worst is unknown. Available: \['best'"):
        policy.select_student("worst", 0.9, 0.9)
    with pytest.raises(ValueError, match="needs the baseline stage"):
        policy.select_student("best", 0.9, None)
