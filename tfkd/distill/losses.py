"""Distillation losses, `tfkd.losses`: the logit losses (KD, DKD, DIST, LogitMSE), defined here,
and the feature losses (`feature_losses.py`), on the registry and base class of `loss_base.py`.
"""

import tensorflow as tf

from tfkd.distill.feature_losses import RKD, AttentionTransfer, FeatureLoss, Hint
from tfkd.distill.loss_base import (
    DEFAULT_TEMPERATURE,
    LogitLoss,
    available,
    check_bool,
    check_nonnegative,
    check_temperature,
    from_spec,
    get,
    register,
)

__all__ = [
    "DEFAULT_TEMPERATURE",
    "DIST",
    "DKD",
    "KD",
    "RKD",
    "AttentionTransfer",
    "FeatureLoss",
    "Hint",
    "LogitLoss",
    "LogitMSE",
    "available",
    "from_spec",
    "get",
    "register",
]


@register("kd")
class KD(LogitLoss):
    """Knowledge distillation, Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
    Network", 2015.

    `T**2 * KL(softmax(t / T) || softmax(s / T))` per example, for teacher logits `t` and student
    logits `s` of shape `(batch, classes)`. The `T**2` factor keeps the gradient magnitude of the
    soft term independent of T, as the paper prescribes, so the hard/soft weighting means the
    same thing at every temperature.

    Args:
        temperature: softening temperature T > 0.
        standardize: z-score both logit rows first (see `LogitLoss`).
    """

    def __init__(self, temperature: float = DEFAULT_TEMPERATURE, standardize: bool = False):
        self.temperature = check_temperature(temperature)
        self.standardize = check_bool("standardize", standardize)

    def per_example(self, teacher_logits, student_logits, labels=None):
        del labels  # KD needs only the teacher's distribution.
        t = self.temperature
        teacher_log_probs = tf.nn.log_softmax(teacher_logits / t, axis=-1)
        student_log_probs = tf.nn.log_softmax(student_logits / t, axis=-1)
        kl = tf.reduce_sum(
            tf.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1
        )
        return (t**2) * kl

    def get_config(self) -> dict:
        return {"temperature": self.temperature, "standardize": self.standardize}


@register("dkd")
class DKD(LogitLoss):
    """Decoupled knowledge distillation, Zhao et al., "Decoupled Knowledge Distillation",
    CVPR 2022.

    Splits KD into a target-class term and a non-target-class term and weights them apart:
    `alpha * TCKD + beta * NCKD`, both times `T**2`, where with `p = softmax(z / T)`:
    - TCKD = KL(b_t || b_s) on the binary distributions `b = [p[label], 1 - p[label]]`;
    - NCKD = KL(q_t || q_s) on the distributions over the non-target classes only
      (`q = softmax(z / T)` with the target logit masked out).
    Needs integer labels. Defaults follow the paper's CIFAR setting (alpha=1, beta=8, T=4); the
    paper's linear warm-up of the loss over the first epochs is not part of the loss (use the
    Distiller's `distillation_warmup_steps`). beta depends on the pair: the authors use 8 for
    resnet32x4 -> resnet8x4 and 2 for resnet56 -> resnet20; for resnet20 -> resnet8 on CIFAR-10,
    2 beat KD and 8 did not (benchmarks/methods_cifar10.py).

    Args:
        alpha: weight of the target-class term.
        beta: weight of the non-target-class term.
        temperature: softening temperature T > 0.
        standardize: z-score both logit rows first (see `LogitLoss`).
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = DEFAULT_TEMPERATURE,
        standardize: bool = False,
    ):
        self.alpha = check_nonnegative("alpha", alpha)
        self.beta = check_nonnegative("beta", beta)
        self.temperature = check_temperature(temperature)
        self.standardize = check_bool("standardize", standardize)

    def per_example(self, teacher_logits, student_logits, labels=None):
        if labels is None:
            raise ValueError("DKD needs the labels: call it as loss(teacher, student, labels).")
        t = self.temperature
        classes = tf.shape(student_logits)[-1]
        target = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), classes)
        p_t = tf.nn.softmax(teacher_logits / t)
        p_s = tf.nn.softmax(student_logits / t)
        eps = 1e-12
        b_t = tf.stack([tf.reduce_sum(p_t * target, -1), tf.reduce_sum(p_t * (1 - target), -1)], -1)
        b_s = tf.stack([tf.reduce_sum(p_s * target, -1), tf.reduce_sum(p_s * (1 - target), -1)], -1)
        tckd = tf.reduce_sum(b_t * (tf.math.log(b_t + eps) - tf.math.log(b_s + eps)), -1)
        # A large negative offset removes the target class from both softmaxes (as the paper).
        log_q_t = tf.nn.log_softmax(teacher_logits / t - 1000.0 * target)
        log_q_s = tf.nn.log_softmax(student_logits / t - 1000.0 * target)
        nckd = tf.reduce_sum(tf.exp(log_q_t) * (log_q_t - log_q_s), -1)
        return (t**2) * (self.alpha * tckd + self.beta * nckd)

    def get_config(self) -> dict:
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "temperature": self.temperature,
            "standardize": self.standardize,
        }


def _pearson_distance(a: tf.Tensor, b: tf.Tensor, axis: int) -> tf.Tensor:
    """1 - Pearson correlation of `a` and `b` along `axis`."""
    a = a - tf.reduce_mean(a, axis=axis, keepdims=True)
    b = b - tf.reduce_mean(b, axis=axis, keepdims=True)
    norm = tf.norm(a, axis=axis) * tf.norm(b, axis=axis)
    return 1.0 - tf.reduce_sum(a * b, axis=axis) / (norm + 1e-8)


@register("dist")
class DIST(LogitLoss):
    """DIST, Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022.

    Matches relations instead of exact probabilities, with `y = softmax(z / T)` of shape
    `(batch, classes)`:
    - inter-class: `1 - pearson(y_s[i], y_t[i])` over the classes of each example, averaged;
    - intra-class: `1 - pearson(y_s[:, c], y_t[:, c])` over the batch for each class, averaged;
    loss = `T**2 * (beta * inter + gamma * intra)`. The intra-class term is a property of the
    whole batch, so per-example sample weights are not supported.

    Args:
        beta: weight of the inter-class term.
        gamma: weight of the intra-class term.
        temperature: softening temperature T > 0 (the paper uses 1 on ImageNet, 4 on CIFAR).
        standardize: z-score both logit rows first (see `LogitLoss`).
    """

    def __init__(
        self,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 1.0,
        standardize: bool = False,
    ):
        self.beta = check_nonnegative("beta", beta)
        self.gamma = check_nonnegative("gamma", gamma)
        self.temperature = check_temperature(temperature)
        self.standardize = check_bool("standardize", standardize)

    def _probabilities(self, teacher_logits, student_logits):
        t = self.temperature
        return tf.nn.softmax(teacher_logits / t), tf.nn.softmax(student_logits / t)

    def per_example(self, teacher_logits, student_logits, labels=None):
        y_t, y_s = self._probabilities(teacher_logits, student_logits)
        return (self.temperature**2) * self.beta * _pearson_distance(y_s, y_t, axis=-1)

    def __call__(self, teacher_logits, student_logits, labels=None, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                "DIST's intra-class term is defined over the whole batch and takes "
                "no sample weights; drop sample_weight or use KD/DKD."
            )
        teacher_logits, student_logits = self._prepared(teacher_logits, student_logits)
        inter = tf.reduce_mean(self.per_example(teacher_logits, student_logits))
        y_t, y_s = self._probabilities(teacher_logits, student_logits)
        intra = tf.reduce_mean(_pearson_distance(y_s, y_t, axis=0))
        return inter + (self.temperature**2) * self.gamma * intra

    def get_config(self) -> dict:
        return {
            "beta": self.beta,
            "gamma": self.gamma,
            "temperature": self.temperature,
            "standardize": self.standardize,
        }


@register("logit_mse")
class LogitMSE(LogitLoss):
    """Mean squared error between logits, `mean_c (s_c - t_c)**2` per example (Ba & Caruana
    2014; Kim et al. 2021 show KD tends to it as the temperature grows). No temperature.

    Args:
        standardize: z-score both logit rows first (see `LogitLoss`).
    """

    def __init__(self, standardize: bool = False):
        self.standardize = check_bool("standardize", standardize)

    def get_config(self) -> dict:
        return {"standardize": self.standardize}

    def per_example(self, teacher_logits, student_logits, labels=None):
        return tf.reduce_mean(tf.square(student_logits - teacher_logits), axis=-1)
