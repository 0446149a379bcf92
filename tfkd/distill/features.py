"""Feature distillation: which teacher and student layers to match, and the adapters between
them. The adapters live in the Distiller and are trained with the student; `distiller.student`
never contains them, so the exported student is the plain student."""

import dataclasses
from collections.abc import Sequence

import tensorflow as tf

from tfkd.distill import losses as losses_lib
from tfkd.keras import keras


@dataclasses.dataclass(frozen=True)
class FeaturePair:
    """Match `student_layer`'s output to `teacher_layer`'s with `loss`, weighted by `weight`."""

    teacher_layer: str
    student_layer: str
    loss: losses_lib.FeatureLoss
    weight: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> "FeaturePair":
        """`teacher_layer:student_layer:loss:weight`, e.g. `stage1_out:stage1_out:hint:1`
        (layer names are checked against the models by `FeatureTaps`)."""
        parts = spec.split(":")
        if len(parts) != 4:
            raise ValueError(f"'{spec}': expected teacher_layer:student_layer:loss:weight.")
        teacher_layer, student_layer, loss_name, weight = parts
        loss = losses_lib.get(loss_name)
        if not isinstance(loss, losses_lib.FeatureLoss):
            feature_losses = [
                n
                for n in losses_lib.available()
                if isinstance(losses_lib.get(n), losses_lib.FeatureLoss)
            ]
            raise ValueError(
                f"'{spec}': '{loss_name}' is a logit loss; use one of the feature "
                f"losses {feature_losses}."
            )
        try:
            scale = float(weight)
        except ValueError as error:
            raise ValueError(f"'{spec}': weight {weight!r} is not a number.") from error
        return cls(teacher_layer, student_layer, loss, scale)


def _layer_output(model: keras.Model, name: str, role: str):
    names = [layer.name for layer in model.layers]
    if name not in names:
        raise ValueError(f"{role} '{model.name}' has no layer '{name}'. Its layers: {names}")
    return model.get_layer(name).output


def _adapter(student_shape, teacher_shape, name: str):
    """A 1x1 conv (feature maps) or dense (vectors) from the student's to the teacher's width."""
    if len(student_shape) != len(teacher_shape):
        raise ValueError(
            f"Feature pair {name}: student features {student_shape} and teacher "
            f"features {teacher_shape} have different ranks."
        )
    if len(student_shape) == 4:
        if tuple(student_shape[1:3]) != tuple(teacher_shape[1:3]):
            raise ValueError(
                f"Feature pair {name}: spatial sizes differ (student {student_shape[1:3]}, "
                f"teacher {teacher_shape[1:3]}). Pick layers at the same resolution."
            )
        return keras.layers.Conv2D(teacher_shape[-1], 1, name=f"adapter_{name}")
    return keras.layers.Dense(teacher_shape[-1], name=f"adapter_{name}")


class FeatureTaps:
    """Multi-output views of teacher and student that return logits plus the tapped features.

    The views share the original layers (and weights), so training the student view trains the
    student.
    """

    def __init__(self, teacher: keras.Model, student: keras.Model, pairs: Sequence[FeaturePair]):
        self.pairs = list(pairs)
        for pair in self.pairs:
            if not isinstance(pair.loss, losses_lib.FeatureLoss):
                raise TypeError(
                    f"A feature pair needs a feature loss (Hint, AttentionTransfer, "
                    f"RKD). Received: {pair.loss!r}"
                )
        teacher_features = [_layer_output(teacher, p.teacher_layer, "Teacher") for p in pairs]
        student_features = [_layer_output(student, p.student_layer, "Student") for p in pairs]
        self.teacher_view = keras.Model(teacher.inputs, [teacher.output, *teacher_features])
        self.student_view = keras.Model(student.inputs, [student.output, *student_features])
        self.adapters = []
        for pair, t, s in zip(self.pairs, teacher_features, student_features):
            needs = pair.loss.needs_adapter and tuple(s.shape[1:]) != tuple(t.shape[1:])
            self.adapters.append(_adapter(s.shape, t.shape, pair.student_layer) if needs else None)

    def trainable_variables(self) -> list:
        return [v for a in self.adapters if a is not None for v in a.trainable_variables]

    def loss(self, teacher_features, student_features, labels, sample_weight) -> tf.Tensor:
        terms = []
        for pair, adapter, t, s in zip(
            self.pairs, self.adapters, teacher_features, student_features
        ):
            if adapter is not None:
                s = adapter(s)
            terms.append(pair.weight * pair.loss(tf.stop_gradient(t), s, labels, sample_weight))
        return tf.add_n(terms)
