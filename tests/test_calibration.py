"""tfkd.distill.calibration: the recipe chosen from the probes' results on the same validation
images."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd.distill import calibration
from tfkd.keras import keras


def _hits(right: int, start: int = 0, images: int = 400) -> np.ndarray:
    """Right on images [start, start + right)."""
    index = np.arange(images)
    return (index >= start) & (index < start + right)


@pytest.mark.parametrize(
    "probes, chosen",
    [
        # dist 40 images (10 points) ahead of kd, every discordant image dist's: far beyond
        # noise and beyond the margin.
        ({"kd": _hits(200), "dist": _hits(240)}, "dist"),
        # 24 images (6 points) ahead, 34 against 10 discordant images: p = 0.0003.
        ({"kd": _hits(200), "dist": _hits(224, start=10)}, "dist"),
        # 16 images (4 points) ahead, all discordant ones its own (p = 3e-5), but under the
        # 5-point margin: an early lead this size is what a teacher-leaning recipe shows anyway.
        ({"kd": _hits(200), "dist": _hits(216)}, "kd"),
        # 20 images (5 points) ahead but 120 against 100 discordant images: p = 0.2, noise.
        ({"kd": _hits(200), "dist": _hits(220, start=100)}, "kd"),
        # kd best.
        ({"kd": _hits(250), "dist": _hits(240)}, "kd"),
        # A tie: the safe recipe.
        ({"kd": _hits(200), "dist": _hits(200, start=5)}, "kd"),
    ],
)
def test_the_best_probe_wins_only_beyond_noise_against_the_safe_recipe(probes, chosen):
    result = calibration.choose(probes, alpha=0.05)
    assert result.candidate == chosen
    # The rule, from an exact binomial sum written out here: DIST leads by the margin and
    # McNemar's two-sided p is below alpha.
    only_dist = int(np.sum(probes["dist"] & ~probes["kd"]))
    only_kd = int(np.sum(probes["kd"] & ~probes["dist"]))
    discordant = only_dist + only_kd
    tail = sum(math.comb(discordant, i) for i in range(min(only_dist, only_kd) + 1))
    p_value = min(1.0, 2 * tail / 2**discordant) if discordant else 1.0
    lead = 100.0 * (only_dist - only_kd) / len(probes["kd"])
    assert (chosen == "dist") == (lead >= calibration.LEAD_MARGIN_POINTS and p_value < 0.05)
    recipe = calibration.CANDIDATES[chosen]
    assert (result.loss, result.student_loss_weight, result.temperature) == (
        recipe.loss,
        recipe.student_loss_weight,
        recipe.temperature,
    )
    best = max(probes, key=lambda name: probes[name].mean())
    if best != "kd":  # the test behind the verdict, against scipy-checked tfkd.measure.stats
        assert result.comparison == tfkd.measure.stats.paired_difference(probes[best], probes["kd"])
    assert result.probe_accuracy == {n: float(h.mean()) for n, h in probes.items()}
    assert isinstance(
        result.build_loss(),
        tfkd.losses.DIST if result.loss == "dist" else tfkd.losses.KD,
    )
    assert calibration.Calibration.from_dict(result.to_dict()) == result


def test_probes_are_the_first_fifth_of_the_budget_and_must_include_the_safe_recipe():
    assert calibration.probe_steps(60) == 12 and calibration.probe_steps(400) == 80
    # At least one epoch, and never the whole budget when there is more than one.
    assert calibration.probe_steps(2) == 1 and calibration.probe_steps(1) == 1
    # The winner continues from its probe: only the losers' probes are added, at most 50%.
    assert calibration.added_share() == pytest.approx(0.2)
    chosen = calibration.choose({"kd": _hits(10), "dist": _hits(5)}, alpha=0.05)
    timed = dataclasses.replace(chosen, probe_seconds={"kd": 3.0, "dist": 2.5})
    assert timed.added_seconds() == 2.5
    with pytest.raises(ValueError, match="must include 'kd'"):
        calibration.choose({"dist": _hits(10)}, alpha=0.05)
    with pytest.raises(ValueError, match="budget"):
        calibration.probe_steps(0)


def test_a_probe_continued_from_its_backup_is_the_uninterrupted_run(tmp_path):
    """The race's winner goes on from its probe's last epoch (the first epochs of the whole
    schedule, `schedule_epochs`, and a kept backup): the weights equal a run that was never
    stopped, so the probe's steps count towards the budget instead of being repeated. A probe
    resumed after its last epoch was saved trains no further."""
    images = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    labels = np.arange(64) % 3
    teacher_logits = np.random.default_rng(1).normal(size=(64, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices(
        (tfkd.data.schema.inputs(images, teacher_logits=teacher_logits), labels)
    ).batch(16)

    def fresh():
        keras.utils.set_random_seed(3)
        return keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
        )

    def run(model, *callbacks, epochs=5):
        return tfkd.distill.training.distill(
            model,
            None,
            data,
            epochs=epochs,
            schedule_epochs=5,
            loss=tfkd.losses.DIST(),
            student_loss_weight=0.5,
            learning_rate=0.05,
            verbose=0,
            callbacks=list(callbacks),
        )

    whole = run(fresh())
    backup = str(tmp_path / "probe")
    kept = tfkd.distill.training.callbacks(backup_dir=backup, keep_backup=True)
    probe = run(fresh(), *kept, epochs=2)
    after_probe = [w.copy() for w in probe.get_weights()]
    rerun = run(
        fresh(), *tfkd.distill.training.callbacks(backup_dir=backup, keep_backup=True), epochs=2
    )
    for got, want in zip(rerun.get_weights(), after_probe):
        np.testing.assert_array_equal(got, want)
    continued = run(fresh(), *tfkd.distill.training.callbacks(backup_dir=backup))
    assert not all(np.allclose(a, b) for a, b in zip(after_probe, whole.get_weights()))
    for got, want in zip(continued.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
