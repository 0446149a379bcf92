"""Tests of tfkd/distill/training.py: the shared optimizer, recipes and float32 copy."""

import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd.distill import training
from tfkd.keras import keras


def _batches(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32)
    y = (x.reshape(n, -1).sum(axis=1) > 0).astype(np.int64) * 3
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


@pytest.mark.parametrize(
    "name, kind", [("adam", keras.optimizers.Adam), ("sgd", keras.optimizers.SGD)]
)
def test_optimizer_decays_from_the_peak_to_zero(name, kind):
    optimizer = training.optimizer(name, 0.1, steps=10)
    assert isinstance(optimizer, kind)
    schedule = optimizer._learning_rate  # the schedule itself (`learning_rate` is its value now)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(5)) == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * 0.5)))
    assert float(schedule(10)) == pytest.approx(0.0, abs=1e-9)
    if name == "sgd":
        assert optimizer.nesterov and optimizer.momentum == training.SGD_MOMENTUM


def test_optimizer_errors():
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adagrad'. Available: \['adam'"):
        training.optimizer("adagrad")
    with pytest.raises(ValueError, match="`learning_rate` must be > 0"):
        training.optimizer("adam", 0.0)
    unknown_size = tf.data.Dataset.range(10).filter(lambda x: x > 2).cardinality()
    with pytest.raises(ValueError, match="dataset of unknown size"):
        training.optimizer("adam", 1e-3, int(unknown_size))


def test_train_classifier_and_distill_lower_their_losses():
    keras.utils.set_random_seed(0)
    teacher = tfkd.models.build("cnn_tiny", (8, 8, 1), 10)
    data = _batches()
    training.train_classifier(teacher, data, epochs=8, learning_rate=1e-2, verbose=0)
    history = teacher.history.history["loss"]
    assert history[-1] < history[0]
    student = tfkd.models.build("cnn_tiny", (8, 8, 1), 10)
    trained = training.distill(
        student, teacher, data, epochs=3, learning_rate=1e-2, student_loss_weight=0.0, verbose=0
    )
    assert trained is student
    # With weight 0 on the labels the student learns the teacher's outputs.
    kd = tfkd.losses.KD()
    x = next(iter(data))[0]
    assert float(kd(teacher(x), student(x))) < float(
        kd(teacher(x), tfkd.models.build("cnn_tiny", (8, 8, 1), 10)(x))
    )


def test_callbacks_are_only_the_ones_asked_for(tmp_path):
    assert [type(c).__name__ for c in training.callbacks()] == ["StopOnNonFiniteLoss"]
    chosen = training.callbacks(str(tmp_path / "b"), str(tmp_path / "l"), 3)
    assert [type(c).__name__ for c in chosen] == [
        "StopOnNonFiniteLoss",
        "BackupAndRestore",
        "TensorBoard",
        "EarlyStopping",
    ]
    assert chosen[3].patience == 3 and chosen[3].restore_best_weights
    with pytest.raises(ValueError, match="early_stopping_patience"):
        training.callbacks(early_stopping_patience=-1)


def test_float32_copy_of_a_mixed_precision_model_keeps_its_weights():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = tfkd.models.build("resnet8", (16, 16, 3), 10)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.dtype_policy.name == "mixed_float16"
    copy = training.float32_copy(mixed)
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    for a, b in zip(mixed.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    assert copy(x).dtype == tf.float32
    np.testing.assert_allclose(copy(x), tf.cast(mixed(x), tf.float32), atol=5e-2)
    plain = tfkd.models.build("cnn_tiny", (8, 8, 1), 10)
    assert training.float32_copy(plain) is plain
