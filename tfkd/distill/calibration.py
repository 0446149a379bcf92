"""Distillation settings chosen for the teacher and data at hand, by measurement: a race of the
candidate recipes over the start of the real schedule, compared by a paired test on the same
validation images; the winner carries on from where its probe stopped.

Why measure: which recipe pays depends on the teacher, the data size and the budget together.
On CIFAR-10 with 10,000 images and 790 steps, DIST at hard-label weight 0.5 gained +3.3 points
over the student alone and KD at weight 0.9 +1.6; with 5,000 images and 400 steps DIST lost to the
student alone even with a teacher 8-13 points better, and KD at 0.9 was best
(benchmarks/RESULTS.md, "comparison_cifar10" and "calibration_*"). The teacher's margin over the
student alone did not tell these apart; training each candidate on this run's data does.

Why a race that continues (successive halving with one rung, as in Hyperband): every candidate
trains from the same initial weights under the *whole* run's learning-rate schedule for its
first `PROBE_SHARE` of the steps, so the probe is the first part of the very run it stands for,
not a compressed imitation. A probe is measured with precise batch-norm statistics
(`tfkd.measure.batch_norm.precise_batch_norm`): this early, Keras' moving averages still hold their
initial values, which is why earlier probes sat at 11-17% on CIFAR-10 whatever they had
learned. The winner's probe is then continued to the end of the schedule, so its probe steps
are not repeated: the race adds (candidates - 1) x `PROBE_SHARE` = 20% of the distillation
budget, and the chosen recipe trains for exactly the budget of a fixed recipe.

The candidates are the recipes that were best somewhere in benchmarks/RESULTS.md: tfkd's KD
(T=4, hard-label weight 0.9), best with a weak teacher and with a good one at a short budget,
and DIST (T=4, weight 0.5), best with a strong teacher and with few labels. The keras.io recipe
(KD T=4, weight 0.1) was a third candidate and is not one: it was never the best fixed recipe,
yet its probe led early with a weak teacher and then fell 5 points behind KD at 0.9
(RESULTS.md, "calibration_weak_race3"). DIST wins only by beating KD at 0.9 beyond noise
(McNemar's exact test) and by `LEAD_MARGIN_POINTS`: an early lead of a few points is what a
teacher-leaning recipe shows even when it ends behind, and one image never moves a run off the
recipe that never collapsed.
"""

import dataclasses

import numpy as np

from tfkd.distill import losses
from tfkd.measure import stats

AUTO = "auto"
DEFAULT_LOSS = AUTO
# Share of the distillation budget each probe trains for. The winner continues from its probe,
# so the loser adds 20% to the stage (at most 50% is allowed; the rest covers the validation
# passes and leaves room for a third candidate).
PROBE_SHARE = 0.2
# How far DIST's probe must lead KD's (beside McNemar's test) to win. A probe's lead is biased
# towards the recipe that leans on the teacher, which learns faster early: on CIFAR-10 leads of
# up to 4.1 points at a fifth of the schedule ended as deficits of 2.3 to 6.4 points, while the
# leads that held were 11.6 points and more (benchmarks/RESULTS.md, "calibration_*_race").
LEAD_MARGIN_POINTS = 5.0


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A candidate: the loss's registry name and parameters, its temperature and the weight of
    the hard-label loss."""

    loss: str
    params: dict
    temperature: float
    student_loss_weight: float

    def build_loss(self) -> losses.LogitLoss:
        return losses.get(self.loss, temperature=self.temperature, **self.params)


CANDIDATES = {
    "kd": Recipe("kd", {}, 4.0, 0.9),
    "dist": Recipe("dist", {"beta": 2.0, "gamma": 2.0}, 4.0, 0.5),
}
SAFE = "kd"


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The chosen recipe (loss registry name, parameters, temperature, hard-label weight), what
    each probe measured on validation, and why."""

    candidate: str
    loss: str
    params: dict
    temperature: float
    student_loss_weight: float
    probe_accuracy: dict
    comparison: dict | None  # tfkd.measure.stats.paired_difference(best probe, safe probe)
    reason: str
    probe_seconds: dict | None = None  # candidate -> seconds of its probe, when measured

    def added_seconds(self) -> float:
        """What the race added to the distillation: the losing probes' time (the winner's probe
        is the start of the distillation itself)."""
        return sum(
            seconds
            for name, seconds in (self.probe_seconds or {}).items()
            if name != self.candidate
        )

    def build_loss(self) -> losses.LogitLoss:
        return Recipe(
            self.loss, self.params, self.temperature, self.student_loss_weight
        ).build_loss()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> "Calibration":
        return cls(**config)


def probe_steps(budget: int) -> int:
    """Optimizer steps (or epochs) of one probe for a distillation budget of `budget`: the first
    part of that budget's schedule, at least one step and never all of it when it has two."""
    if budget < 1:
        raise ValueError(f"`budget` must be >= 1. Received: budget={budget}")
    return max(1, min(budget - 1, int(budget * PROBE_SHARE))) if budget > 1 else 1


def added_share() -> float:
    """What the race adds to the distillation budget: the losing probes' steps."""
    return (len(CANDIDATES) - 1) * PROBE_SHARE


def choose(probe_correct: dict, alpha: float) -> Calibration:
    """The recipe whose probe was most accurate on validation (`probe_correct`: candidate name
    -> per-image results on the same images); the safe default unless another beats it by
    `LEAD_MARGIN_POINTS` and beyond noise at `alpha`."""
    unknown = sorted(set(probe_correct) - set(CANDIDATES))
    if unknown or SAFE not in probe_correct:
        raise ValueError(
            f"Probes must include '{SAFE}' and come from {sorted(CANDIDATES)}. "
            f"Received: {sorted(probe_correct)}"
        )
    accuracy = {name: float(np.mean(hits)) for name, hits in probe_correct.items()}
    best = max(accuracy, key=lambda name: (accuracy[name], name == SAFE))
    comparison = None
    scores = ", ".join(f"{n} {100 * a:.2f}%" for n, a in accuracy.items())
    images = len(probe_correct[SAFE])
    if best == SAFE:
        chosen = SAFE
        why = f"no probe beat KD at hard-label weight 0.9 on {images} validation images ({scores})"
    else:
        comparison = stats.paired_difference(probe_correct[best], probe_correct[SAFE])
        p_value, lead = comparison["p_value"], 100.0 * comparison["difference"]
        chosen = best if lead >= LEAD_MARGIN_POINTS and p_value < alpha else SAFE
        margin = f"by at least {LEAD_MARGIN_POINTS:g} points beyond noise"
        why = (
            f"its probe beat KD at hard-label weight 0.9 {margin} on {images} validation "
            f"images ({scores}; McNemar p={p_value:.2g})"
            if chosen == best
            else f"no probe beat KD at hard-label weight 0.9 {margin} on {images} validation "
            f"images ({scores}; {best} vs kd {lead:+.1f} points, McNemar p={p_value:.2g})"
        )
    recipe = CANDIDATES[chosen]
    return Calibration(
        chosen,
        recipe.loss,
        dict(recipe.params),
        recipe.temperature,
        recipe.student_loss_weight,
        accuracy,
        comparison,
        why,
    )


def candidate_loss(name: str) -> tuple[losses.LogitLoss, float]:
    """The loss and hard-label weight of candidate `name`, for its probe."""
    recipe = CANDIDATES[name]
    return recipe.build_loss(), recipe.student_loss_weight


__all__ = [
    "AUTO",
    "CANDIDATES",
    "Calibration",
    "Recipe",
    "DEFAULT_LOSS",
    "LEAD_MARGIN_POINTS",
    "PROBE_SHARE",
    "SAFE",
    "added_share",
    "candidate_loss",
    "choose",
    "probe_steps",
]
