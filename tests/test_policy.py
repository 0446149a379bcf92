"""Tests of the pipeline's policy: the teacher check and which student is shipped."""

import numpy as np
import pytest

import tfkd
from pipelines import policy
from tfkd.keras import keras


def _results(correct: int, total: int = 200, offset: int = 0) -> np.ndarray:
    """Per-image results with `correct` right answers, starting at image `offset`."""
    hits = np.zeros(total, bool)
    hits[(np.arange(correct) + offset) % total] = True
    return hits


def _comparison(a, b):
    return tfkd.measure.stats.paired_difference(a, b)


def test_teacher_check_flags_members_within_the_margin_or_the_noise():
    baseline = _results(150)  # 75%
    strong, close, noisy = _results(190), _results(151), _results(156, offset=40)
    comparisons = {
        "strong": _comparison(strong, baseline),
        "close": _comparison(close, baseline),
        "noisy": _comparison(noisy, baseline),
    }
    check = policy.TeacherCheck(
        {"strong": 0.95, "close": 0.755, "noisy": 0.78},
        0.75,
        margin_points=1.0,
        comparisons=comparisons,
    )
    # close: 0.5 points, under the margin; noisy: 3 points over it, but p >= 0.05.
    assert comparisons["noisy"]["p_value"] >= 0.05 and comparisons["strong"]["p_value"] < 0.05
    assert check.weak == ["close", "noisy"] and not check.ok
    assert "not 1.0 points better than the student alone beyond noise" in check.message()
    assert "McNemar p=" in check.message() and "--student_loss_weight" in check.message()


def test_check_teachers_evaluates_each_ensemble_member_on_the_same_images():
    splits = tfkd.data.load("digits")
    test = tfkd.data.batches(splits.test, splits.preprocessing, 256)
    keras.utils.set_random_seed(1)
    student = tfkd.models.build("cnn_small", (8, 8, 1), 10)
    untrained = tfkd.models.build("cnn_tiny", (8, 8, 1), 10)
    labels = np.concatenate([y for _, y in test.as_numpy_iterator()])
    perfect = np.ones(labels.size, bool)
    check = policy.check_teachers([student, untrained], perfect, test, margin_points=1.0)
    assert check.teacher_accuracy[student.name] == tfkd.tasks.classification.keras_accuracy(
        student, test
    )
    # Two untrained networks sit near chance, far below a baseline that gets every image right.
    assert check.weak == [student.name, untrained.name]
    hopeless = np.zeros(labels.size, bool)
    assert policy.check_teachers(student, hopeless, test, margin_points=1.0).ok


@pytest.mark.parametrize(
    "distilled, alone, shipped, verdict",
    [
        (_results(140), _results(160), "baseline", "beyond noise"),  # 10 points, p < 0.05
        (_results(158), _results(160), "student", "within noise"),  # one image in 100 is noise
        (_results(160), _results(160), "student", "within noise"),
        (_results(180), _results(150), "student", "better beyond noise"),
    ],
)
def test_best_ships_the_student_alone_only_when_it_is_better_beyond_noise(
    distilled, alone, shipped, verdict
):
    chosen, reason, comparison = policy.select_student("best", distilled, alone)
    assert chosen == shipped and verdict in reason
    assert comparison == tfkd.measure.stats.paired_difference(distilled, alone)
    assert f"McNemar p={comparison['p_value']:.2g}" in reason


@pytest.mark.parametrize("rule, shipped", [("distilled", "student"), ("baseline", "baseline")])
def test_forced_selection(rule, shipped):
    chosen, reason, comparison = policy.select_student(rule, _results(10), _results(190))
    assert (chosen, reason, comparison) == (shipped, f"--select={rule}", None)


def test_select_student_errors():
    with pytest.raises(ValueError, match=r"--select=worst is unknown. Available: \['best'"):
        policy.select_student("worst", _results(1), _results(1))
    with pytest.raises(ValueError, match="needs the baseline stage"):
        policy.select_student("best", _results(1), None)
