"""`Distiller`: trains a student on hard labels and on a frozen teacher's outputs."""

import math
from collections.abc import Sequence

import tensorflow as tf

from tfkd.data.schema import UNLABELED, split_inputs
from tfkd.distill import losses as losses_lib
from tfkd.distill import teachers as teachers_lib
from tfkd.distill.features import FeaturePair, FeatureTaps
from tfkd.keras import keras
from tfkd.models import keras3 as keras3_lib

LossSpec = losses_lib.LogitLoss | Sequence[tuple[losses_lib.LogitLoss, float]]


def _num_outputs(model: keras.Model, role: str) -> int:
    shape = model.output_shape
    if isinstance(shape, list):
        raise ValueError(
            f"The {role} '{model.name}' has {len(shape)} outputs; tfkd expects one logits output "
            "of shape (batch, classes). Fix: build a model with a single logits output."
        )
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"The {role} '{model.name}' outputs shape {shape}; tfkd expects logits of shape "
            "(batch, classes). Fix: end the model with a Dense(num_classes) layer and no softmax."
        )
    return int(shape[-1])


def _check_model(model, role: str) -> keras.Model:
    if isinstance(model, teachers_lib.TFLiteTeacher):
        raise TypeError(
            f"A .tflite {role} runs outside TensorFlow and can only teach through the teacher "
            "cache: build one with tfkd.distill.teacher_cache.build(...), train on "
            "tfkd.distill.teacher_cache.batches(...), and pass teacher=None."
        )
    if keras3_lib.is_keras3_model(model):
        # A Keras 3 student trains as its tf_keras twin (`Distiller.student`); a Keras 3
        # teacher is only called, through the frozen adapter.
        return keras3_lib.to_keras2(model) if role == "student" else teachers_lib.load(model)
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"The {role} must be a tf_keras or Keras 3 Model. Received: "
            f"{type(model).__module__}.{type(model).__name__}. Load a Keras 3 model, SavedModel "
            "or file with tfkd.distill.teachers.load(...) (the explicit adapter) first."
        )
    return model


DEFAULT_STUDENT_LOSS_WEIGHT = 0.9


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(
            f"`{name}` must be in [0, 1]: the weight of the hard-label loss, the rest going to "
            f"distillation. Received: {name}={value}"
        )
    return float(value)


def _loss_terms(loss: LossSpec | None) -> list[tuple[losses_lib.LogitLoss, float]]:
    if loss is None:
        return [(losses_lib.KD(), 1.0)]
    if callable(loss):
        return [(loss, 1.0)]
    terms = []
    for item in loss:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and callable(item[0])):
            raise TypeError(
                "`loss` must be a loss such as tfkd.distill.losses.KD(4.0), or a list of "
                f"(loss, weight) pairs. Received an item: {item!r}"
            )
        weight = float(item[1])
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"Loss weights must be finite and >= 0. Received: {item!r}")
        terms.append((item[0], weight))
    if not terms:
        raise ValueError("`loss` is an empty list; give at least one distillation loss.")
    return terms


class Distiller(keras.Model):
    """Trains `student` on `student_loss_weight * hard loss + (1 - it) * distillation loss`.

    The teacher (or each member of an ensemble) is frozen: it runs with `training=False`, its
    variables are never handed to the optimizer, and it is marked non-trainable. `call` returns
    the student's logits, so `evaluate`/`predict` measure the student; save
    `distiller.student`, never the wrapper.

    Args:
        student: functional tf_keras model emitting logits `(batch, classes)`.
        teacher: a tf_keras model emitting logits, or a list of them (an ensemble whose logits
            are averaged, optionally weighted by `teacher_weights`); other sources (files,
            SavedModels, Keras 3 models) go through `tfkd.distill.teachers.load` first. None
            when every batch carries cached teacher logits (`tfkd.distill.teacher_cache.batches`);
            batches that carry them never call the teacher, whichever is given.
        loss: a logit loss (default `tfkd.losses.KD()`, T=4), or a list of `(loss, weight)`
            pairs summed into the distillation loss.
        student_loss_weight: weight in [0, 1] of the hard-label loss. The default
            (`DEFAULT_STUDENT_LOSS_WEIGHT`) is the setting that did not wreck the student with a
            poor teacher while matching lower weights with a strong one (the measurement is in
            benchmarks/RESULTS.md, "Choosing the distillation defaults").
        student_loss: Keras loss on the labels; default sparse categorical cross-entropy on
            logits. Only its per-example `call` is used.
        teacher_weights: optional non-negative weights of ensemble members (normalised to 1).
        distillation_warmup_steps: ramp the distillation term linearly from 0 to full weight
            over this many optimizer steps (DKD's warm-up; 0 = none). Evaluation always uses
            the full weight.
        features: `tfkd.distill.features.FeaturePair`s matching intermediate layers (single teacher
            only); their weighted losses join the distillation loss. Adapters are created where
            shapes differ and trained with the student, and never become part of it.
    """

    def __init__(
        self,
        student: keras.Model,
        teacher: None | keras.Model | Sequence[keras.Model],
        loss: LossSpec | None = None,
        student_loss_weight: float = DEFAULT_STUDENT_LOSS_WEIGHT,
        student_loss: keras.losses.Loss | None = None,
        teacher_weights: Sequence[float] | None = None,
        distillation_warmup_steps: int = 0,
        features: Sequence[FeaturePair] = (),
        name: str = "distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.student = _check_model(student, "student")
        self._ensemble = isinstance(teacher, (list, tuple))
        if isinstance(teacher, (list, tuple)):
            teachers = list(teacher)
        else:
            teachers = [] if teacher is None else [teacher]
        if self._ensemble and not teachers:
            raise ValueError("`teacher` is an empty list; give at least one teacher model.")
        self.teachers = [_check_model(t, "teacher") for t in teachers]
        self.student_loss_weight = _check_fraction("student_loss_weight", student_loss_weight)
        if not self.teachers and (teacher_weights is not None or features):
            raise ValueError(
                "Without a teacher model (teacher=None, logits from the cache) there "
                "are no features to tap and no members to weight: give "
                "teacher_weights to tfkd.distill.teacher_cache.build, and a teacher model "
                "for feature distillation."
            )
        self.teacher_weights = teachers_lib.normalized_weights(teacher_weights, len(self.teachers))
        self.distillation_terms = _loss_terms(loss)
        if (
            isinstance(distillation_warmup_steps, bool)
            or not isinstance(distillation_warmup_steps, int)
            or distillation_warmup_steps < 0
        ):
            raise ValueError(
                "`distillation_warmup_steps` must be an integer >= 0. Received: "
                f"distillation_warmup_steps={distillation_warmup_steps!r}"
            )
        self.distillation_warmup_steps = distillation_warmup_steps
        self.student_loss = student_loss or keras.losses.SparseCategoricalCrossentropy(
            from_logits=True
        )

        num_classes = _num_outputs(self.student, "student")
        for t in self.teachers:
            teacher_classes = _num_outputs(t, "teacher")
            if teacher_classes != num_classes:
                raise ValueError(
                    f"Teacher '{t.name}' emits {teacher_classes} logits but student "
                    f"'{self.student.name}' emits {num_classes}. Teacher and student must "
                    "predict the same classes; rebuild the student with the teacher's class count."
                )
            t.trainable = False

        self.taps = None
        if features:
            if self._ensemble:
                raise ValueError(
                    "Feature distillation takes one teacher; use an ensemble with "
                    "logit losses only."
                )
            self.taps = FeatureTaps(self.teachers[0], self.student, features)
            # Tracked as an attribute so the adapters' weights are saved in checkpoints.
            self.adapters = [a for a in self.taps.adapters if a is not None]

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")

    @property
    def teacher(self) -> keras.Model | list[keras.Model]:
        """The teacher as given: one model, the list of ensemble members, or None."""
        if self._ensemble:
            return list(self.teachers)
        return self.teachers[0] if self.teachers else None

    def compile(self, optimizer="rmsprop", metrics=None, **kwargs):
        if kwargs.get("loss") is not None or kwargs.get("loss_weights") is not None:
            raise ValueError(
                "Distiller takes its losses in the constructor (`loss=`, `student_loss=`, "
                "`student_loss_weight=`), not in compile(). Remove `loss`/`loss_weights` there."
            )
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    @property
    def metrics(self):
        trackers = [self.loss_tracker, self.student_loss_tracker, self.distillation_loss_tracker]
        compiled = getattr(self, "compiled_metrics", None)
        return trackers + (compiled.metrics if compiled is not None else [])

    def call(self, inputs, training=None):
        return self.student(split_inputs(inputs)[0], training=training)

    def teacher_logits(self, x) -> tf.Tensor:
        """The (ensemble-averaged) teacher logits for `x`, without gradient."""
        if not self.teachers:
            raise ValueError(
                "This Distiller has no teacher model (teacher=None), so every batch "
                "must carry cached teacher logits: train and validate on "
                "tfkd.distill.teacher_cache.batches(...), or pass the teacher."
            )
        outputs = [tf.cast(t(x, training=False), tf.float32) for t in self.teachers]
        if len(outputs) == 1:
            logits = outputs[0]
        elif self.teacher_weights is None:
            logits = tf.add_n(outputs) / float(len(outputs))
        else:
            logits = tf.add_n([w * o for w, o in zip(self.teacher_weights, outputs)])
        return tf.stop_gradient(logits)

    def _teacher(self, x, cached_logits=None):
        """Teacher logits and tapped features, without gradient."""
        if cached_logits is not None:
            if self.taps is not None:
                raise ValueError(
                    "Feature distillation needs the teacher's forward pass; the "
                    "teacher cache stores logits only. Train feature pairs on "
                    "tfkd.data.batches, without the cache."
                )
            return cached_logits, []
        if self.taps is None:
            return self.teacher_logits(x), []
        teacher_logits, *teacher_features = self.taps.teacher_view(x, training=False)
        # The feature losses stop the teacher's gradient themselves (FeatureTaps.loss).
        return tf.stop_gradient(tf.cast(teacher_logits, tf.float32)), teacher_features

    def _student(self, x, training):
        if self.taps is None:
            return self.student(x, training=training), []
        logits, *features = self.taps.student_view(x, training=training)
        return logits, features

    @staticmethod
    def _labeled(y):
        """The labels as a vector, and which of them are real (not `UNLABELED`)."""
        flat = tf.reshape(y, [-1])
        return flat, tf.not_equal(tf.cast(flat, tf.int64), UNLABELED)

    def _labels(self, y, teacher_logits):
        """The labels with `UNLABELED` examples given the teacher's top class (for losses that
        need a target class, e.g. DKD), and which examples carry a real label."""
        flat, labeled = self._labeled(y)
        stand_in = tf.cast(tf.argmax(teacher_logits, axis=-1), flat.dtype)
        return tf.where(labeled, flat, stand_in), labeled

    def _compute_losses(
        self,
        y,
        student_logits,
        teacher_logits,
        sample_weight,
        ramp=1.0,
        teacher_features=(),
        student_features=(),
    ):
        y, labeled = self._labels(y, teacher_logits)
        per_example = tf.cast(self.student_loss.call(y, student_logits), tf.float32)
        # The hard-label loss is the mean over the examples that have a label (every example,
        # normally: then it is Keras' weighted sum over the batch size).
        weights = tf.cast(labeled, tf.float32)
        if sample_weight is not None:
            weights *= tf.reshape(tf.cast(sample_weight, tf.float32), tf.shape(weights))
        student_loss = tf.math.divide_no_nan(
            tf.reduce_sum(per_example * weights), tf.reduce_sum(tf.cast(labeled, tf.float32))
        )
        distillation_loss = tf.add_n(
            [
                weight * loss(teacher_logits, student_logits, y, sample_weight)
                for loss, weight in self.distillation_terms
            ]
        )
        if self.taps is not None:
            distillation_loss += self.taps.loss(
                teacher_features, student_features, y, sample_weight
            )
        total = (
            self.student_loss_weight * student_loss
            + (1.0 - self.student_loss_weight) * ramp * distillation_loss
        )
        if self.student.losses:
            total += tf.add_n([tf.cast(extra, tf.float32) for extra in self.student.losses])
        return total, student_loss, distillation_loss

    def _update_trackers(self, y, student_logits, sample_weight, total, student_loss, kd_loss):
        batch_size = tf.shape(student_logits)[0]
        self.loss_tracker.update_state(total, sample_weight=batch_size)
        self.student_loss_tracker.update_state(student_loss, sample_weight=batch_size)
        self.distillation_loss_tracker.update_state(kd_loss, sample_weight=batch_size)
        # Metrics such as accuracy count the labeled examples only: Keras' own output mask
        # (`_keras_mask`) is how compiled metrics, which ignore sample weights, skip examples.
        labels, labeled = self._labeled(y)
        # Any valid class stands in for a missing label: the mask leaves it uncounted.
        labels = tf.where(labeled, labels, tf.zeros_like(labels))
        masked = tf.identity(student_logits)
        masked._keras_mask = labeled
        self.compiled_metrics.update_state(labels, masked, sample_weight)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, teacher_x, cached_logits = split_inputs(x)
        teacher_logits, teacher_features = self._teacher(teacher_x, cached_logits)
        ramp = 1.0
        if self.distillation_warmup_steps:
            steps = tf.cast(self.optimizer.iterations, tf.float32)
            ramp = tf.minimum(1.0, steps / float(self.distillation_warmup_steps))
        with tf.GradientTape() as tape:
            student_logits, student_features = self._student(x, training=True)
            total, student_loss, kd_loss = self._compute_losses(
                y,
                student_logits,
                teacher_logits,
                sample_weight,
                ramp,
                teacher_features,
                student_features,
            )
            # Replica gradients are summed by the optimizer: scale each replica's mean by the
            # replica count so the step equals one over the global batch (as Keras' own losses do).
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled_total = total / replicas if replicas > 1 else total
        variables = self.student.trainable_variables
        if self.taps is not None:
            variables = variables + self.taps.trainable_variables()
        self.optimizer.minimize(scaled_total, variables, tape=tape)
        return self._update_trackers(y, student_logits, sample_weight, total, student_loss, kd_loss)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, teacher_x, cached_logits = split_inputs(x)
        teacher_logits, teacher_features = self._teacher(teacher_x, cached_logits)
        student_logits, student_features = self._student(x, training=False)
        total, student_loss, kd_loss = self._compute_losses(
            y,
            student_logits,
            teacher_logits,
            sample_weight,
            1.0,
            teacher_features,
            student_features,
        )
        return self._update_trackers(y, student_logits, sample_weight, total, student_loss, kd_loss)

    def get_config(self) -> dict:
        serialize = keras.saving.serialize_keras_object
        teachers = [serialize(t) for t in self.teachers] or [None]
        return {
            "name": self.name,
            "student": serialize(self.student),
            "teacher": teachers if self._ensemble else teachers[0],
            "loss": [(serialize(loss), weight) for loss, weight in self.distillation_terms],
            "student_loss_weight": self.student_loss_weight,
            "student_loss": serialize(self.student_loss),
            "teacher_weights": self.teacher_weights,
            "distillation_warmup_steps": self.distillation_warmup_steps,
            "features": [
                {
                    "teacher_layer": p.teacher_layer,
                    "student_layer": p.student_layer,
                    "loss": serialize(p.loss),
                    "weight": p.weight,
                }
                for p in (self.taps.pairs if self.taps is not None else [])
            ],
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> "Distiller":
        config = dict(config)

        def deserialize(c):
            return keras.saving.deserialize_keras_object(c, custom_objects=custom_objects)

        teacher = config["teacher"]
        config["teacher"] = (
            [deserialize(t) for t in teacher] if isinstance(teacher, list) else deserialize(teacher)
        )
        config["student"] = deserialize(config["student"])
        config["loss"] = [(deserialize(loss), weight) for loss, weight in config["loss"]]
        config["student_loss"] = deserialize(config["student_loss"])
        config["features"] = [
            FeaturePair(**{**p, "loss": deserialize(p["loss"])}) for p in config.get("features", [])
        ]
        return cls(**config)
