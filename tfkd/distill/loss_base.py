"""What every distillation loss shares: the registry (`register`, `get`, `from_spec`), sample
weighting, argument checks and the `LogitLoss` base class. The logit losses (`losses.py`) and
the feature losses (`feature_losses.py`) both build on it; `tfkd.losses` gathers them.

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


def check_temperature(temperature: float) -> float:
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


def check_bool(name: str, value) -> bool:
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


def check_nonnegative(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"`{name}` must be a finite number >= 0. Received: {name}={value!r}")
    return float(value)
