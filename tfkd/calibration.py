"""Distillation settings chosen for the teacher at hand, from a measurement made before
distillation: how much better the teacher is than the student trained alone, on the same
validation images, beyond noise.

Why this measurement decides (benchmarks/RESULTS.md, CIFAR-10, same budget for every row):
- With a teacher clearly better than the student alone, most of the gain comes from trusting it:
  DIST at hard-label weight 0.5 gained +3.3 points and the keras.io recipe (weight 0.1) +2.6,
  while tfkd's cautious KD at weight 0.9 gained +1.6.
- With a teacher that is not better than the student alone, the low hard-label weights copy its
  mistakes: every weight-0.1 setting and DIST at 0.5 lost 35-40 points with a weak teacher
  (`kd_defaults_cifar10`), while KD at weight 0.9 stayed within noise of the student alone.
So the question "is this teacher better than the student beyond noise, and by a margin?" is the
one that separates the two regimes, and the teacher check already answers it with a paired test
(McNemar's exact test) on the validation images. It costs one pass of the teacher and of the
student alone over the validation split: no extra training.
"""

import dataclasses
from typing import Optional

from tfkd import losses

STRONG_TEACHER = dict(loss="dist", params={"beta": 2.0, "gamma": 2.0}, temperature=4.0,
                      student_loss_weight=0.5)
WEAK_TEACHER = dict(loss="kd", params={}, temperature=4.0, student_loss_weight=0.9)
AUTO = "auto"
# The pipeline's default stays the fixed KD recipe until calibration beats it on the CIFAR-10
# settings of benchmarks/RESULTS.md ("calibration_*"), which it does not yet.
DEFAULT_LOSS = "kd"
# How many points better than the student alone a teacher must be (beyond noise) to be trusted.
DEFAULT_MARGIN_POINTS = 1.0


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The chosen loss (registry name, parameters, temperature), hard-label weight, and why."""

    loss: str
    params: dict
    temperature: float
    student_loss_weight: float
    teacher_gain: Optional[dict]  # tfkd.stats.paired_difference(teacher, alone) on validation
    reason: str

    def build_loss(self) -> losses.LogitLoss:
        return losses.get(self.loss, temperature=self.temperature, **self.params)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> "Calibration":
        return cls(**config)


def calibrate(teacher_gain: dict, margin_points: float, alpha: float) -> Calibration:
    """Settings for a teacher whose paired validation gain over the student alone is
    `teacher_gain` (`tfkd.stats.paired_difference(teacher_correct, alone_correct)`): the
    strong-teacher settings when it is at least `margin_points` better and McNemar's p-value
    is below `alpha` (the pipeline passes its teacher-check settings)."""
    points = 100.0 * teacher_gain["difference"]
    p_value = teacher_gain["p_value"]
    strong = points >= margin_points and p_value < alpha
    chosen = STRONG_TEACHER if strong else WEAK_TEACHER
    measured = (f"the teacher is {points:+.2f} points over the student alone on "
                f"{teacher_gain['images']} validation images (McNemar p={p_value:.2g})")
    reason = (f"{measured}: beyond noise and the {margin_points:g}-point margin, so the "
              "student trusts it (DIST, hard-label weight 0.5)" if strong else
              f"{measured}: not {margin_points:g} points better beyond noise, so the labels "
              "keep most of the weight (KD T=4, hard-label weight 0.9)")
    return Calibration(chosen["loss"], dict(chosen["params"]), chosen["temperature"],
                       chosen["student_loss_weight"], dict(teacher_gain), reason)


__all__ = ["AUTO", "DEFAULT_LOSS", "DEFAULT_MARGIN_POINTS", "Calibration", "STRONG_TEACHER", "WEAK_TEACHER", "calibrate"]
