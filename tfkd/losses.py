"""Distillation losses.

A logit loss is called as `loss(teacher_logits, student_logits, labels=None, sample_weight=None)`
and returns the batch mean as a scalar. Subclasses implement `per_example`, which returns one
value per example; the base class owns weighting and averaging so that every method treats
sample weights the way Keras treats them for its own losses (weighted sum / batch size).
"""

import math
from typing import Any, Optional

import tensorflow as tf

from tfkd.keras import keras
from tfkd.registry import Registry

_REGISTRY: Registry[type] = Registry("loss")


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


def available() -> list[str]:
    """Names of all registered losses."""
    return _REGISTRY.names()


def weighted_batch_mean(values: tf.Tensor, sample_weight: Optional[tf.Tensor] = None) -> tf.Tensor:
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


class LogitLoss:
    """Base class of losses between teacher and student logits of shape `(batch, classes)`."""

    def per_example(
        self, teacher_logits: tf.Tensor, student_logits: tf.Tensor, labels: Optional[tf.Tensor]
    ) -> tf.Tensor:
        """Loss of each example, shape `(batch,)`."""
        raise NotImplementedError

    def __call__(
        self,
        teacher_logits: tf.Tensor,
        student_logits: tf.Tensor,
        labels: Optional[tf.Tensor] = None,
        sample_weight: Optional[tf.Tensor] = None,
    ) -> tf.Tensor:
        # Softmax and log in float32 even under mixed precision: float16 KL underflows.
        teacher_logits = tf.cast(teacher_logits, tf.float32)
        student_logits = tf.cast(student_logits, tf.float32)
        return weighted_batch_mean(
            self.per_example(teacher_logits, student_logits, labels), sample_weight
        )

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
    """

    def __init__(self, temperature: float = 4.0):
        self.temperature = _check_temperature(temperature)

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
        return {"temperature": self.temperature}
