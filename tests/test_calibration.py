"""tfkd.calibration: the distillation settings chosen from the teacher's paired gain."""

import numpy as np
import pytest

import tfkd
from tfkd import calibration


def _gain(teacher_right: int, alone_right: int, teacher_from: int = 0, images: int = 400):
    """Teacher right on images [teacher_from, teacher_from + teacher_right), the student alone
    on [0, alone_right)."""
    index = np.arange(images)
    teacher = (index >= teacher_from) & (index < teacher_from + teacher_right)
    return tfkd.stats.paired_difference(teacher, index < alone_right)


@pytest.mark.parametrize("teacher_right, alone_right, teacher_from, strong", [
    (360, 300, 0, True),     # +15 points, p ~ 1e-18
    (306, 300, 0, True),     # +1.5 points, all 6 discordant images the teacher's: p = 0.031
    (306, 300, 10, False),   # +1.5 points, 16 against 10 discordant images: p = 0.33, noise
    (303, 300, 0, False),    # +0.75 points: under the 1-point margin
    (300, 300, 0, False),    # the same
    (250, 300, 0, False),    # worse than the student alone
])
def test_a_teacher_better_beyond_noise_by_the_margin_gets_the_strong_settings(
        teacher_right, alone_right, teacher_from, strong):
    gain = _gain(teacher_right, alone_right, teacher_from)
    # Independent of the rule's code: strong iff >= 1 point and McNemar p < 0.05.
    expected = 100 * gain["difference"] >= 1.0 and gain["p_value"] < 0.05
    assert expected == strong
    chosen = calibration.calibrate(gain, margin_points=1.0, alpha=0.05)
    settings = calibration.STRONG_TEACHER if strong else calibration.WEAK_TEACHER
    assert (chosen.loss, chosen.student_loss_weight, chosen.temperature) == (
        settings["loss"], settings["student_loss_weight"], settings["temperature"])
    assert f"McNemar p={gain['p_value']:.2g}" in chosen.reason
    loss = chosen.build_loss()
    assert isinstance(loss, tfkd.losses.DIST if strong else tfkd.losses.KD)
    assert calibration.Calibration.from_dict(chosen.to_dict()) == chosen
