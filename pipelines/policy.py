"""What the pipeline decides from measurements: whether the teacher is good enough to teach
(`check_teachers`) and which student is quantized and shipped (`select_student`).

Both are paired tests on the same validation images (McNemar's exact test, `tfkd.measure.stats`), so
one image never decides: on the digits recipe's 143 validation images one image is 0.7 points.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tfkd.keras import keras
from tfkd.measure import stats
from tfkd.tasks.classification import correct_predictions

DEFAULT_TEACHER_MARGIN_POINTS = 1.0
DEFAULT_SELECT_ALPHA = stats.DEFAULT_ALPHA
SELECTIONS = ("best", "distilled", "baseline")


def _points(comparison: dict) -> str:
    low, high = (100 * v for v in comparison["interval"])
    return (
        f"{100 * comparison['difference']:+.2f} points, 95% interval {low:+.2f} to "
        f"{high:+.2f}, McNemar p={comparison['p_value']:.2g}, {comparison['images']} images"
    )


@dataclasses.dataclass(frozen=True)
class TeacherCheck:
    """Whether each teacher (or ensemble member) is better than the student alone by
    `margin_points`, beyond noise (McNemar at `alpha`), on the same validation images."""

    teacher_accuracy: dict[str, float]
    baseline_accuracy: float
    margin_points: float
    comparisons: dict[
        str, dict
    ]  # teacher -> tfkd.measure.stats.paired_difference(teacher, baseline)
    alpha: float = DEFAULT_SELECT_ALPHA

    @property
    def weak(self) -> list[str]:
        """Teachers not at least `margin_points` above the baseline, or not beyond noise."""
        return [
            name
            for name, c in self.comparisons.items()
            if 100.0 * c["difference"] < self.margin_points or c["p_value"] >= self.alpha
        ]

    @property
    def ok(self) -> bool:
        return not self.weak

    def message(self) -> str:
        scores = "; ".join(
            f"{n} {100 * self.teacher_accuracy[n]:.2f}% ({_points(c)})"
            for n, c in self.comparisons.items()
        )
        if self.ok:
            return (
                f"Teacher check passed: {scores} against the student alone "
                f"{100 * self.baseline_accuracy:.2f}% on validation."
            )
        return (
            f"Teacher check: {', '.join(self.weak)} not {self.margin_points:.1f} points "
            f"better than the student alone beyond noise on validation ({scores}; student "
            f"alone {100 * self.baseline_accuracy:.2f}%). Distillation may make the student "
            "worse. What to do: train the teacher longer or use a stronger one; with a named "
            "--loss, raise --student_loss_weight and lower --temperature (--loss=auto keeps "
            "KD at hard-label weight 0.9 unless another recipe wins beyond noise); the "
            "student alone is shipped if it is better beyond noise (--select=best)."
        )

    def to_dict(self) -> dict:
        return {
            "teacher_accuracy": self.teacher_accuracy,
            "baseline_accuracy": self.baseline_accuracy,
            "margin_points": self.margin_points,
            "alpha": self.alpha,
            "comparisons": self.comparisons,
            "ok": self.ok,
            "weak": self.weak,
            "message": self.message(),
        }


def check_teachers(
    teachers: keras.Model | list,
    baseline_correct: np.ndarray,
    batches: tf.data.Dataset,
    margin_points: float = DEFAULT_TEACHER_MARGIN_POINTS,
    alpha: float = DEFAULT_SELECT_ALPHA,
) -> TeacherCheck:
    """Each teacher on `batches` (validation) against the student alone's per-image results
    `baseline_correct` on the same images."""
    members = teachers if isinstance(teachers, (list, tuple)) else [teachers]
    correct = {t.name: correct_predictions(t, batches) for t in members}
    return TeacherCheck(
        {n: float(np.mean(c)) for n, c in correct.items()},
        float(np.mean(baseline_correct)),
        margin_points,
        {n: stats.paired_difference(c, baseline_correct) for n, c in correct.items()},
        alpha,
    )


def select_student(
    policy: str,
    distilled_correct: np.ndarray | None,
    baseline_correct: np.ndarray | None,
    alpha: float = DEFAULT_SELECT_ALPHA,
) -> tuple[str, str, dict | None]:
    """Which student to ship (`"student"` or `"baseline"`), why, and the paired comparison of
    distilled minus alone on validation.

    `best` ships the student alone only when it is better beyond noise (McNemar's exact test at
    `alpha`); otherwise the distilled student, which carries the teacher's knowledge.
    """
    if policy not in SELECTIONS:
        raise ValueError(f"--select={policy} is unknown. Available: {list(SELECTIONS)}")
    if policy == "distilled":
        return "student", "--select=distilled", None
    if baseline_correct is None:
        raise ValueError(f"--select={policy} needs the baseline stage (the student alone).")
    if policy == "baseline":
        return "baseline", "--select=baseline", None
    comparison = stats.paired_difference(distilled_correct, baseline_correct)
    if comparison["difference"] < 0 and comparison["p_value"] < alpha:
        return (
            "baseline",
            (
                "the student alone is better than the distilled student beyond "
                f"noise on validation ({_points(comparison)})"
            ),
            comparison,
        )
    verdict = "within noise" if comparison["p_value"] >= alpha else "better beyond noise"
    return (
        "student",
        (
            f"the distilled student is not worse than the student alone beyond "
            f"noise on validation ({verdict}: {_points(comparison)})"
        ),
        comparison,
    )
