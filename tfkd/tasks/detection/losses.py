"""Distillation losses on a detector's dense predictions, per location (anchor or feature-map
cell), each a weighted mean over the locations that count (`weights`, e.g. the teacher's
foreground probability or the positive locations; all of them when None):

- `dense_kd`: temperature KD on the class logits of every location (background included);
- `localization_kd`: LD (Zheng et al., CVPR 2022), temperature KD on the discretised
  distribution of each box edge, as generalised-focal-loss heads predict them;
- `giou_loss`: 1 - GIoU between the student's and the teacher's decoded boxes.

Temperature losses carry the `T**2` factor (Hinton et al. 2015), as `tfkd.losses.KD` does.
"""

import tensorflow as tf


def _weighted_mean(values: tf.Tensor, weights: tf.Tensor | None) -> tf.Tensor:
    """Mean of `values` (batch, locations) under `weights` (same shape, or None for all)."""
    values = tf.cast(values, tf.float32)
    if weights is None:
        return tf.reduce_mean(values)
    weights = tf.cast(weights, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), tf.reduce_sum(weights))


def _kl(teacher_logits: tf.Tensor, student_logits: tf.Tensor, temperature: float) -> tf.Tensor:
    """KL(teacher || student) of the softened distributions over the last axis, times T**2."""
    teacher = tf.nn.log_softmax(tf.cast(teacher_logits, tf.float32) / temperature, axis=-1)
    student = tf.nn.log_softmax(tf.cast(student_logits, tf.float32) / temperature, axis=-1)
    return tf.reduce_sum(tf.exp(teacher) * (teacher - student), axis=-1) * temperature**2


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0. Received: temperature={temperature}")


def dense_kd(
    teacher_logits: tf.Tensor,
    student_logits: tf.Tensor,
    weights: tf.Tensor | None = None,
    temperature: float = 2.0,
) -> tf.Tensor:
    """KD on class logits (batch, locations, classes incl. background)."""
    _check_temperature(temperature)
    return _weighted_mean(_kl(teacher_logits, student_logits, temperature), weights)


def localization_kd(
    teacher_edges: tf.Tensor,
    student_edges: tf.Tensor,
    weights: tf.Tensor | None = None,
    temperature: float = 10.0,
) -> tf.Tensor:
    """LD on edge distributions (batch, locations, 4, bins): KD per edge, averaged over the 4
    edges of a location (LD's paper uses T=10)."""
    _check_temperature(temperature)
    per_location = tf.reduce_mean(_kl(teacher_edges, student_edges, temperature), axis=-1)
    return _weighted_mean(per_location, weights)


def giou(boxes_a: tf.Tensor, boxes_b: tf.Tensor) -> tf.Tensor:
    """Generalised IoU (Rezatofighi et al. 2019) of corner boxes (..., 4) x_min, y_min, x_max,
    y_max, pairwise along the leading axes."""
    a, b = tf.cast(boxes_a, tf.float32), tf.cast(boxes_b, tf.float32)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    inter_w = tf.maximum(0.0, tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]))
    inter_h = tf.maximum(0.0, tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]))
    inter = inter_w * inter_h
    union = area_a + area_b - inter
    hull_w = tf.maximum(a[..., 2], b[..., 2]) - tf.minimum(a[..., 0], b[..., 0])
    hull_h = tf.maximum(a[..., 3], b[..., 3]) - tf.minimum(a[..., 1], b[..., 1])
    hull = hull_w * hull_h
    return tf.math.divide_no_nan(inter, union) - tf.math.divide_no_nan(hull - union, hull)


def giou_loss(
    teacher_boxes: tf.Tensor, student_boxes: tf.Tensor, weights: tf.Tensor | None = None
) -> tf.Tensor:
    """1 - GIoU between the student's boxes and the teacher's (batch, locations, 4)."""
    return _weighted_mean(1.0 - giou(teacher_boxes, student_boxes), weights)
