"""Distillation losses.

A logit loss is called as `loss(teacher_logits, student_logits, labels=None, sample_weight=None)`
and returns the batch mean as a scalar. Subclasses implement `per_example`, which returns one
value per example; the base class owns weighting and averaging so that every method treats
sample weights the way Keras treats them for its own losses (weighted sum / batch size).
"""

import math
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from tfkd.keras import keras
from tfkd.registry import Registry

_REGISTRY: Registry[type] = Registry("loss")
DEFAULT_TEMPERATURE = 4.0
BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def register(name: str):
    """Registers a loss class under `name` for `get` and Keras serialization."""

    def add(cls):
        _REGISTRY.register(name)(cls)
        return keras.saving.register_keras_serializable(package="tfkd", name=cls.__name__)(cls)

    return add


def get(name: str, **kwargs: Any) -> "LogitLoss":
    """Builds the loss registered as `name` with `kwargs`.

    Raises:
        ValueError: for an unknown name, listing the available ones.
    """
    return _REGISTRY.get(name)(**kwargs)


def takes(name: str, argument: str) -> bool:
    """Whether the loss registered as `name` has the constructor argument `argument`."""
    import inspect

    return argument in inspect.signature(_REGISTRY.get(name)).parameters


def available() -> list[str]:
    """Names of all registered losses."""
    return _REGISTRY.names()


def from_spec(
    name: str, params: Sequence[str] = (), temperature: float | None = None
) -> "LogitLoss":
    """The loss `name` built from `key=value` strings, e.g. `from_spec("dkd", ["beta=2"])` or
    `from_spec("kd", ["standardize=true"])`.

    `temperature`, when given, is passed to losses that take one (others ignore it); every
    other parameter keeps its paper's default unless named in `params`.
    """
    kwargs: dict[str, float] = {}
    if temperature is not None and takes(name, "temperature"):
        kwargs["temperature"] = temperature
    for item in params:
        key, _, value = item.partition("=")
        if not value or not takes(name, key) or (key == "temperature" and temperature is not None):
            raise ValueError(
                f"'{item}' is not a key=value parameter of loss '{name}' (temperature "
                "is given separately)."
            )
        if key == "standardize":
            if value.lower() not in BOOLEANS:
                raise ValueError(f"'{item}': standardize takes true or false.")
            kwargs[key] = BOOLEANS[value.lower()]
            continue
        try:
            kwargs[key] = float(value)
        except ValueError as error:
            raise ValueError(f"'{item}': {value!r} is not a number.") from error
    return get(name, **kwargs)


def weighted_batch_mean(values: tf.Tensor, sample_weight: tf.Tensor | None = None) -> tf.Tensor:
    """Mean of per-example `values` (shape `(batch,)`), weighted as Keras does.

    Keras' SUM_OVER_BATCH_SIZE divides the weighted sum by the batch size, not by the sum of
    weights; doing the same keeps a Distiller with `student_loss_weight=1` identical to plain
    `model.fit`.
    """
    values = tf.convert_to_tensor(values)
    if sample_weight is None:
        return tf.reduce_mean(values)
    sample_weight = tf.reshape(tf.cast(sample_weight, values.dtype), tf.shape(values))
    batch_size = tf.cast(tf.size(values), values.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(values * sample_weight), batch_size)


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(
            f"`temperature` must be a number. Received: temperature={temperature!r} "
            f"of type {type(temperature).__name__}"
        )
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(
            f"`temperature` must be a finite number > 0 (Hinton et al. use 1-20; 4 is common). "
            f"Received: temperature={temperature}"
        )
    return float(temperature)


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return value


def standardized(logits: tf.Tensor) -> tf.Tensor:
    """Each row z-scored over the classes: `(z - mean(z)) / (std(z) + 1e-7)`, with the sample
    (n - 1) standard deviation, as the reference code of Sun et al., "Logit Standardization in
    Knowledge Distillation", CVPR 2024."""
    mean = tf.reduce_mean(logits, axis=-1, keepdims=True)
    count = tf.cast(tf.shape(logits)[-1], logits.dtype)
    variance = tf.reduce_sum(tf.square(logits - mean), axis=-1, keepdims=True) / (count - 1.0)
    return (logits - mean) / (tf.sqrt(variance) + 1e-7)


class LogitLoss:
    """Base class of losses between teacher and student logits of shape `(batch, classes)`.

    Logit losses take `standardize`: z-score both logit rows before the loss (Sun et al.,
    CVPR 2024), so the student matches the teacher's logit *relations* rather than their
    magnitude, which a small student may not be able to reach. The temperature then divides the
    standardized logits.
    """

    standardize = False

    def per_example(
        self, teacher_logits: tf.Tensor, student_logits: tf.Tensor, labels: tf.Tensor | None
    ) -> tf.Tensor:
        """Loss of each example, shape `(batch,)`."""
        raise NotImplementedError

    def __call__(
        self,
        teacher_logits: tf.Tensor,
        student_logits: tf.Tensor,
        labels: tf.Tensor | None = None,
        sample_weight: tf.Tensor | None = None,
    ) -> tf.Tensor:
        teacher_logits, student_logits = self._prepared(teacher_logits, student_logits)
        return weighted_batch_mean(
            self.per_example(teacher_logits, student_logits, labels), sample_weight
        )

    def _prepared(self, teacher_logits: tf.Tensor, student_logits: tf.Tensor):
        # Softmax and log in float32 even under mixed precision: float16 KL underflows.
        teacher_logits = tf.cast(teacher_logits, tf.float32)
        student_logits = tf.cast(student_logits, tf.float32)
        if self.standardize:
            return standardized(teacher_logits), standardized(student_logits)
        return teacher_logits, student_logits

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> "LogitLoss":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


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
        self.temperature = _check_temperature(temperature)
        self.standardize = _check_bool("standardize", standardize)

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


def _check_nonnegative(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"`{name}` must be a finite number >= 0. Received: {name}={value!r}")
    return float(value)


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
        self.alpha = _check_nonnegative("alpha", alpha)
        self.beta = _check_nonnegative("beta", beta)
        self.temperature = _check_temperature(temperature)
        self.standardize = _check_bool("standardize", standardize)

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
        self.beta = _check_nonnegative("beta", beta)
        self.gamma = _check_nonnegative("gamma", gamma)
        self.temperature = _check_temperature(temperature)
        self.standardize = _check_bool("standardize", standardize)

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
        self.standardize = _check_bool("standardize", standardize)

    def get_config(self) -> dict:
        return {"standardize": self.standardize}

    def per_example(self, teacher_logits, student_logits, labels=None):
        return tf.reduce_mean(tf.square(student_logits - teacher_logits), axis=-1)


# The feature losses live in a module of their own and register themselves here; imported last,
# once everything they build on is defined, so that `tfkd.losses.Hint` and `get("hint")` work.
from tfkd.distill.feature_losses import RKD, AttentionTransfer, FeatureLoss, Hint  # noqa: E402, F401
