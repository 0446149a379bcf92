"""The training recipes every caller shares: the optimizer and its schedule, training a
classifier on hard labels, distilling a student, and the float32 copy of a mixed-precision model.

The pipeline, the benchmarks and library users train through these functions, so a recipe
measured in `benchmarks/` is the recipe a run uses.
"""

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfkd.distill import losses as losses_lib
from tfkd.distill.distiller import DEFAULT_STUDENT_LOSS_WEIGHT, Distiller
from tfkd.distill.features import FeaturePair
from tfkd.keras import keras

OPTIMIZERS = ("adam", "sgd")
DEFAULT_OPTIMIZER = "adam"
DEFAULT_LEARNING_RATE = 1e-3
SGD_MOMENTUM = 0.9


def optimizer(
    name: str = DEFAULT_OPTIMIZER, learning_rate: float = DEFAULT_LEARNING_RATE, steps: int = 1
) -> keras.optimizers.Optimizer:
    """`name` (one of `OPTIMIZERS`) with a cosine decay from `learning_rate` to 0 over `steps`.

    SGD uses Nesterov momentum 0.9, the CIFAR ResNet recipe of He et al. and of the
    distillation papers (CRD, DKD).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer '{name}'. Available: {list(OPTIMIZERS)}")
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0. Received: learning_rate={learning_rate}")
    if int(steps) < 0:
        # tf.data reports -1/-2 for an infinite or unknown size: a schedule over it is no
        # schedule (the rate would drop to 0 after one step).
        raise ValueError(
            f"`steps` must be >= 0. Received: steps={steps} (the cardinality of a "
            "dataset of unknown size? Count its batches instead)."
        )
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(int(steps), 1))
    if name == "sgd":
        return keras.optimizers.SGD(schedule, momentum=SGD_MOMENTUM, nesterov=True)
    return keras.optimizers.Adam(schedule)


class NonFiniteLoss(ValueError):
    """The training loss became NaN or infinite; `epoch` and `batch` count from 1."""

    def __init__(self, epoch: int, batch: int, value: float):
        super().__init__(f"the training loss became {value} at epoch {epoch} (batch {batch})")
        self.epoch, self.batch, self.value = epoch, batch, value


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `NonFiniteLoss` at the first non-finite batch loss, before the epoch ends, so a
    backup taken at the end of each epoch keeps the last good weights (Keras' own
    TerminateOnNaN stops quietly, and the epoch-end backup then saves the broken weights)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            raise NonFiniteLoss(self._epoch + 1, batch + 1, float(loss))


def callbacks(
    backup_dir: str | None = None,
    log_dir: str | None = None,
    early_stopping_patience: int = 0,
    keep_backup: bool = False,
) -> list[keras.callbacks.Callback]:
    """Stop at a non-finite loss, then, each only when asked for: resumable training (a backup
    every epoch, deleted when `fit` ends unless `keep_backup`, so that another `fit` can carry
    on from it), TensorBoard logs and early stopping on validation accuracy (best weights
    kept)."""
    if early_stopping_patience < 0:
        raise ValueError(
            "`early_stopping_patience` must be >= 0 (0 turns it off). "
            f"Received: early_stopping_patience={early_stopping_patience}"
        )
    chosen: list[keras.callbacks.Callback] = [StopOnNonFiniteLoss()]
    if backup_dir:
        chosen.append(
            keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=not keep_backup)
        )
    if log_dir:
        chosen.append(keras.callbacks.TensorBoard(log_dir))
    if early_stopping_patience:
        chosen.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                mode="max",
                patience=early_stopping_patience,
                restore_best_weights=True,
            )
        )
    return chosen


def _steps_per_epoch(train: tf.data.Dataset) -> int:
    steps = int(train.cardinality())
    if steps < 1:
        raise ValueError(
            "The training dataset must be batched with a known, non-zero number of "
            f"batches (cardinality {steps}); build it with tfkd.data.batches."
        )
    return steps


def train_classifier(
    model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None = None,
    epochs: int = 1,
    *,
    optimizer_name: str = DEFAULT_OPTIMIZER,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    jit_compile: bool = False,
    verbose: int | str = "auto",
) -> keras.Model:
    """Trains `model` (emitting logits) on the hard labels of `train`; returns it."""
    steps = epochs * _steps_per_epoch(train)
    model.compile(
        optimizer=optimizer(optimizer_name, learning_rate, steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    model.fit(
        train, validation_data=validation, epochs=epochs, callbacks=list(callbacks), verbose=verbose
    )
    return model


def distill(
    student: keras.Model,
    teacher,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None = None,
    epochs: int = 1,
    *,
    loss: losses_lib.LogitLoss | None = None,
    student_loss_weight: float = DEFAULT_STUDENT_LOSS_WEIGHT,
    features: Sequence[FeaturePair] = (),
    warmup_epochs: int = 0,
    schedule_epochs: int | None = None,
    optimizer_name: str = DEFAULT_OPTIMIZER,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    jit_compile: bool = False,
    verbose: int | str = "auto",
) -> keras.Model:
    """Trains `student` (float or quantization-aware) against the frozen `teacher` (a model, a
    list of models, or None when `train` carries cached teacher logits); returns the student.

    `warmup_epochs` ramps the distillation term up from 0 over that many epochs.
    `schedule_epochs` (default `epochs`) is the length of the learning-rate schedule, for a fit
    that is only the first part of a longer run, continued later from its backup (a race's
    probe, tfkd.distill.calibration).
    """
    steps_per_epoch = _steps_per_epoch(train)
    distiller = Distiller(
        student=student,
        teacher=teacher,
        loss=loss if loss is not None else losses_lib.KD(),
        features=features,
        student_loss_weight=student_loss_weight,
        distillation_warmup_steps=warmup_epochs * steps_per_epoch,
    )
    distiller.compile(
        optimizer=optimizer(
            optimizer_name, learning_rate, (schedule_epochs or epochs) * steps_per_epoch
        ),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    distiller.fit(
        train, validation_data=validation, epochs=epochs, callbacks=list(callbacks), verbose=verbose
    )
    return distiller.student


def _float32_config(config):
    """A layer configuration with every mixed-precision dtype policy replaced by float32."""
    if isinstance(config, dict):
        return {
            key: ("float32" if key == "dtype" and _is_policy(value) else _float32_config(value))
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_float32_config(item) for item in config]
    return config


def _is_policy(value) -> bool:
    if isinstance(value, str):
        return value.startswith("mixed_")
    return isinstance(value, dict) and value.get("class_name") in ("Policy", "DTypePolicy")


def float32_copy(model: keras.Model) -> keras.Model:
    """`model` itself when it is float32, else a float32 copy with the same weights.

    Mixed precision keeps variables in float32, so the copy holds exactly the trained weights;
    saved and exported models are never float16 by accident.
    """
    if model.dtype_policy.name == "float32":
        return model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = model.__class__.from_config(_float32_config(model.get_config()))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy
