"""What the pipeline decides from measurements: whether the teacher is good enough to teach
(`check_teachers`) and which student is quantized and shipped (`select_student`)."""

import dataclasses
from typing import Optional, Union

import tensorflow as tf

from tfkd.evaluate import keras_accuracy
from tfkd.keras import keras

DEFAULT_TEACHER_MARGIN_POINTS = 1.0
SELECTIONS = ("best", "distilled", "baseline")


@dataclasses.dataclass(frozen=True)
class TeacherCheck:
    """Whether a teacher (or each ensemble member) is clearly better than the student alone."""

    teacher_accuracy: dict[str, float]
    baseline_accuracy: float
    margin_points: float

    @property
    def weak(self) -> list[str]:
        """Teachers not at least `margin_points` above the baseline."""
        return [name for name, accuracy in self.teacher_accuracy.items()
                if 100.0 * (accuracy - self.baseline_accuracy) < self.margin_points]

    @property
    def ok(self) -> bool:
        return not self.weak

    def message(self) -> str:
        scores = ", ".join(f"{n} {100 * a:.2f}%" for n, a in self.teacher_accuracy.items())
        if self.ok:
            return (f"Teacher check passed: {scores} vs student alone "
                    f"{100 * self.baseline_accuracy:.2f}% on validation.")
        return (f"Teacher check: {', '.join(self.weak)} not {self.margin_points:.1f} points better "
                f"than the student alone on validation ({scores} vs "
                f"{100 * self.baseline_accuracy:.2f}%). Distillation may make the student worse. "
                "What to do: train the teacher longer or use a stronger one, raise "
                "--student_loss_weight, lower --temperature; the student alone is shipped if it "
                "is better (--select=best).")

    def to_dict(self) -> dict:
        return {"teacher_accuracy": self.teacher_accuracy,
                "baseline_accuracy": self.baseline_accuracy,
                "margin_points": self.margin_points, "ok": self.ok, "weak": self.weak,
                "message": self.message()}


def check_teachers(teachers: Union[keras.Model, list], baseline_accuracy: float,
                   batches: tf.data.Dataset, margin_points: float = DEFAULT_TEACHER_MARGIN_POINTS
                   ) -> TeacherCheck:
    """Evaluates each teacher on `batches` (validation) against the student-alone accuracy."""
    members = teachers if isinstance(teachers, (list, tuple)) else [teachers]
    accuracy = {t.name: keras_accuracy(t, batches) for t in members}
    return TeacherCheck(accuracy, baseline_accuracy, margin_points)


def select_student(policy: str, distilled_accuracy: float,
                   baseline_accuracy: Optional[float]) -> tuple[str, str]:
    """Which student to ship (`"student"` or `"baseline"`) and why, from validation accuracies.

    `best` ships the distilled student unless the baseline is strictly better on validation.
    """
    if policy not in SELECTIONS:
        raise ValueError(f"--select={policy} is unknown. Available: {list(SELECTIONS)}")
    if policy == "distilled":
        return "student", "--select=distilled"
    if baseline_accuracy is None:
        raise ValueError(f"--select={policy} needs the baseline stage (the student alone).")
    if policy == "baseline":
        return "baseline", "--select=baseline"
    if baseline_accuracy > distilled_accuracy:
        return "baseline", (
            f"the distilled student is worse than the student alone on validation "
            f"({100 * distilled_accuracy:.2f}% vs {100 * baseline_accuracy:.2f}%)")
    return "student", (
        f"the distilled student is at least as good as the student alone on validation "
        f"({100 * distilled_accuracy:.2f}% vs {100 * baseline_accuracy:.2f}%)")
