"""Feature distillation losses: they compare intermediate activations of teacher and student
(FitNets hints, attention transfer, relational KD), not logits. Registered beside the logit
losses (`tfkd.losses.get("hint")`) and paired with layers by
`tfkd.distill.features.FeaturePair`."""

import tensorflow as tf

from tfkd.distill.loss_base import LogitLoss, check_nonnegative, register


class FeatureLoss(LogitLoss):
    """Base class of losses between intermediate features (`(batch, ...)` tensors).

    `needs_adapter`: whether student features must first be projected to the teacher's shape
    (the Distiller then adds a trainable 1x1 conv or dense adapter, dropped at export).
    """

    needs_adapter = False


@register("hint")
class Hint(FeatureLoss):
    """FitNets hints, Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015.

    Mean squared error between the teacher's feature map and the student's, projected to the
    teacher's channels by a trainable regressor (the adapter): `mean((r(s) - t)**2)` per example.
    Spatial sizes must match.
    """

    needs_adapter = True

    def per_example(self, teacher_logits, student_logits, labels=None):
        axes = tf.range(1, tf.rank(student_logits))
        return tf.reduce_mean(tf.square(student_logits - teacher_logits), axis=axes)


def _attention_map(features: tf.Tensor, p: float) -> tf.Tensor:
    """`normalize(mean_c |F|^p)` flattened over positions, as in the authors' code."""
    attention = tf.reduce_mean(tf.pow(tf.abs(features), p), axis=-1)
    attention = tf.reshape(attention, [tf.shape(attention)[0], -1])
    return tf.math.l2_normalize(attention, axis=-1)


@register("attention")
class AttentionTransfer(FeatureLoss):
    """Attention transfer, Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017.

    Spatial attention maps `Q = mean_c |F|^p` of `(batch, h, w, c)` features, L2-normalised over
    positions; per example the mean over positions of `(Q_s - Q_t)**2` (the authors' `at_loss`).
    Teacher and student maps must have the same spatial size; channels may differ. The paper
    multiplies by beta = 1000 (pass it as the pair's weight).

    Args:
        p: exponent of the attention map (2 in the paper).
    """

    def __init__(self, p: float = 2.0):
        self.p = float(p)
        if not self.p > 0:
            raise ValueError(f"`p` must be > 0. Received: p={p}")

    def per_example(self, teacher_logits, student_logits, labels=None):
        if student_logits.shape.rank != 4:
            raise ValueError(
                "AttentionTransfer needs (batch, height, width, channels) features; "
                f"got rank {student_logits.shape.rank}."
            )
        difference = _attention_map(student_logits, self.p) - _attention_map(teacher_logits, self.p)
        return tf.reduce_mean(tf.square(difference), axis=-1)

    def get_config(self) -> dict:
        return {"p": self.p}


def _huber(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    diff = tf.abs(a - b)
    return tf.reduce_mean(tf.where(diff < 1.0, 0.5 * tf.square(diff), diff - 0.5))


@register("rkd")
class RKD(FeatureLoss):
    """Relational knowledge distillation, Park et al., CVPR 2019.

    On embeddings `(batch, d)` (features are flattened): the distance term compares pairwise
    Euclidean distances, each set divided by its mean non-zero distance; the angle term compares
    the cosines of the angles formed by every triplet. Both use the Huber (smooth L1) loss;
    loss = `distance_weight * distance + angle_weight * angle` (25 and 50 in the paper). A
    relation between examples is a property of the batch: no per-example values, no sample
    weights.
    """

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0):
        self.distance_weight = check_nonnegative("distance_weight", distance_weight)
        self.angle_weight = check_nonnegative("angle_weight", angle_weight)

    @staticmethod
    def _distances(e: tf.Tensor) -> tf.Tensor:
        squared = tf.reduce_sum(tf.square(e[:, None, :] - e[None, :, :]), axis=-1)
        distances = tf.sqrt(tf.maximum(squared, 1e-12)) * (1.0 - tf.eye(tf.shape(e)[0]))
        positive = tf.cast(distances > 0, distances.dtype)
        mean = tf.reduce_sum(distances) / tf.maximum(tf.reduce_sum(positive), 1.0)
        return distances / mean

    @staticmethod
    def _angles(e: tf.Tensor) -> tf.Tensor:
        differences = tf.math.l2_normalize(e[None, :, :] - e[:, None, :], axis=-1)
        return tf.matmul(differences, differences, transpose_b=True)

    def __call__(self, teacher_logits, student_logits, labels=None, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                "RKD compares examples with each other and takes no sample "
                "weights; drop sample_weight."
            )
        batch = tf.shape(student_logits)[0]
        t = tf.reshape(tf.cast(teacher_logits, tf.float32), [batch, -1])
        s = tf.reshape(tf.cast(student_logits, tf.float32), [batch, -1])
        distance = _huber(self._distances(s), self._distances(t))
        angle = _huber(self._angles(s), self._angles(t))
        return self.distance_weight * distance + self.angle_weight * angle

    def per_example(self, teacher_logits, student_logits, labels=None):
        raise NotImplementedError("RKD is defined on the whole batch; call the loss itself.")

    def get_config(self) -> dict:
        return {"distance_weight": self.distance_weight, "angle_weight": self.angle_weight}
