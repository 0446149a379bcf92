"""Detection distillation losses (tfkd/tasks/detection/losses.py) against numpy references and
boxes worked out by hand."""

import numpy as np
import pytest

from tfkd.tasks.detection import losses


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _kl(teacher, student, temperature):
    t, s = _log_softmax(teacher / temperature), _log_softmax(student / temperature)
    return (np.exp(t) * (t - s)).sum(axis=-1) * temperature**2


RNG = np.random.default_rng(0)


def test_dense_kd_is_the_weighted_mean_of_per_location_kd():
    teacher, student = RNG.normal(scale=3, size=(2, 2, 7, 4))
    weights = RNG.uniform(size=(2, 7))
    expected = (_kl(teacher, student, 2.0) * weights).sum() / weights.sum()
    got = losses.dense_kd(teacher, student, weights, temperature=2.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(
        losses.dense_kd(teacher, student, temperature=3.0),
        _kl(teacher, student, 3.0).mean(),
        rtol=1e-5,
    )
    assert float(losses.dense_kd(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)
    # No location counts: nothing to learn, not a division by zero.
    assert float(losses.dense_kd(teacher, student, np.zeros((2, 7)))) == 0.0
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        losses.dense_kd(teacher, student, temperature=0.0)


def test_localization_kd_averages_the_four_edges_of_each_location():
    teacher, student = RNG.normal(scale=2, size=(2, 3, 5, 4, 8))
    weights = (RNG.uniform(size=(3, 5)) > 0.5).astype(np.float32)
    per_location = _kl(teacher, student, 10.0).mean(axis=-1)
    expected = (per_location * weights).sum() / weights.sum()
    got = losses.localization_kd(teacher, student, weights)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_giou_of_boxes_worked_out_by_hand():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 2, 2]], np.float32)
    b = np.array([[0, 0, 2, 2], [2, 0, 3, 1], [1, 1, 3, 3]], np.float32)
    # Same box: 1. Apart: IoU 0, hull 3 holds a union of 2: -1/3. Overlap 1 of a union of 7 in
    # a hull of 9: 1/7 - 2/9.
    np.testing.assert_allclose(losses.giou(a, b), [1.0, -1 / 3, 1 / 7 - 2 / 9], rtol=1e-6)
    np.testing.assert_allclose(
        losses.giou_loss(a[None], b[None]), np.mean([0.0, 4 / 3, 1 - (1 / 7 - 2 / 9)]), rtol=1e-6
    )
    np.testing.assert_allclose(
        losses.giou_loss(a[None], b[None], np.array([[0.0, 1.0, 0.0]])), 4 / 3, rtol=1e-6
    )


def test_decoding_in_training_is_the_exported_decoding():
    from tfkd.tasks.detection import export, models

    anchors = export.grid_anchors(32, [8, 16], [32.0, 64.0])
    encodings = RNG.normal(scale=2, size=(2, len(anchors), 4)).astype(np.float32)
    y0, x0, y1, x1 = np.moveaxis(export.decode(encodings, anchors), -1, 0)
    np.testing.assert_allclose(
        models._decode(encodings, anchors), np.stack([x0, y0, x1, y1], -1), rtol=1e-5, atol=1e-6
    )


def test_a_student_detector_learns_to_imitate_its_teacher():
    """Distillation alone (no label term) brings the student's class scores and boxes toward a
    teacher's on the images it trains on."""
    from tfkd.keras import keras
    from tfkd.tasks.detection import models

    keras.utils.set_random_seed(0)
    teacher, anchors = models.build("detector_large", 32, 3)
    # A teacher with opinions: its heads' initial weights, scaled up, spread its scores and
    # boxes far from a fresh student's near-uniform ones.
    for layer in teacher.layers:
        if layer.name.startswith(("class", "box")) and layer.get_weights():
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel * 30.0, bias])
    student, _ = models.build("detector_small", 32, 3)
    images = RNG.uniform(-1, 1, size=(32, 32, 32, 3)).astype(np.float32)
    labels = np.zeros((32, len(anchors)), np.int64)
    encodings = np.zeros((32, len(anchors), 4), np.float32)

    def gap():
        t_boxes, t_logits = teacher(images, training=False)
        # Batch statistics: after 60 steps the moving averages still hold their start.
        s_boxes, s_logits = student(images, training=True)
        return float(losses.dense_kd(t_logits, s_logits)), float(
            np.abs(np.asarray(t_boxes) - np.asarray(s_boxes)).mean()
        )

    before = gap()
    distiller = models.DetectionDistiller(student, teacher, anchors, student_loss_weight=0.0)
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = distiller.fit(images, (labels, encodings), batch_size=8, epochs=15, verbose=0)
    after = gap()
    assert set(history.history) >= {"loss", "hard", "kd", "giou"}
    # Seeds 0-4: the class gap falls 60-110 times, the box gap about 10 times.
    assert after[0] < before[0] / 3 and after[1] < before[1] / 3, (before, after)
    with pytest.raises(ValueError, match="distillation pairs them one to one"):
        models.DetectionDistiller(student, teacher, anchors[:5])
