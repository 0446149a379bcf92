import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd.keras import keras

layers = keras.layers
NUM_CLASSES = 3


def blobs(n=96, seed=0):
    """A learnable toy problem: three Gaussian blobs in 4-D."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=n)
    centers = np.eye(NUM_CLASSES, 4) * 3.0
    features = centers[labels] + rng.normal(size=(n, 4))
    return features.astype(np.float32), labels.astype(np.int64)


def dataset(batch_size=16, n=96, seed=0):
    x, y = blobs(n, seed)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def mlp(name, hidden=8, batch_norm=False, dropout=0.0, seed=0):
    initializer = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((4,))
    x = layers.Dense(hidden, kernel_initializer=initializer, name=f"{name}_hidden")(inputs)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.ReLU()(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(NUM_CLASSES, kernel_initializer=initializer, name=f"{name}_logits")(x)
    return keras.Model(inputs, outputs, name=name)


def numpy_cross_entropy(logits, labels):
    z = logits - logits.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]


def numpy_kd(teacher, student, temperature):
    def log_softmax(z):
        z = z / temperature
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    log_t, log_s = log_softmax(teacher), log_softmax(student)
    return temperature**2 * np.sum(np.exp(log_t) * (log_t - log_s), axis=-1)


def test_fit_lowers_the_loss_on_a_learnable_problem():
    distiller = tfkd.Distiller(mlp("student"), mlp("teacher", seed=1), student_loss_weight=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(0.05), metrics=["accuracy"])
    data = dataset()
    before = distiller.evaluate(data, return_dict=True, verbose=0)["loss"]
    distiller.fit(data, epochs=1, verbose=0)
    after = distiller.evaluate(data, return_dict=True, verbose=0)["loss"]
    assert after < before * 0.9


def test_reported_losses_match_numpy_on_one_batch():
    x, y = blobs(16)
    student, teacher = mlp("student"), mlp("teacher", seed=1)
    weight, temperature = 0.3, 2.0
    distiller = tfkd.Distiller(
        student, teacher, loss=tfkd.losses.KD(temperature), student_loss_weight=weight
    )
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    got = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    s, t = student.predict(x, verbose=0), teacher.predict(x, verbose=0)
    ce, kd = numpy_cross_entropy(s, y).mean(), numpy_kd(t, s, temperature).mean()
    assert got["student_loss"] == pytest.approx(ce, rel=1e-5)
    assert got["distillation_loss"] == pytest.approx(kd, rel=1e-5)
    assert got["loss"] == pytest.approx(weight * ce + (1 - weight) * kd, rel=1e-5)
    assert got["accuracy"] == pytest.approx(np.mean(s.argmax(-1) == y))


def test_teacher_is_frozen_bit_for_bit_and_not_optimized():
    teacher = mlp("teacher", batch_norm=True, dropout=0.5, seed=1)
    before = [w.copy() for w in teacher.get_weights()]
    distiller = tfkd.Distiller(mlp("student"), teacher)
    distiller.compile(optimizer=keras.optimizers.Adam(0.05))
    distiller.fit(dataset(), epochs=2, verbose=0)
    for old, new in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(old, new)  # includes BatchNorm moving statistics
    optimizer_variables = [v.name for v in distiller.optimizer.variables()]
    assert any("student_hidden" in n for n in optimizer_variables)
    assert not any("teacher" in n for n in optimizer_variables)
    assert not teacher.trainable


def test_no_gradient_flows_into_the_teacher():
    teacher = mlp("teacher", seed=1)
    distiller = tfkd.Distiller(mlp("student"), teacher)
    x, _ = blobs(8)
    with tf.GradientTape() as tape:
        logits = distiller.teacher_logits(x)
    gradients = tape.gradient(tf.reduce_sum(logits), teacher.weights)
    assert all(g is None for g in gradients)


def test_ensemble_logits_are_the_mean_or_weighted_mean_of_members():
    members = [mlp(f"teacher{i}", seed=i + 1) for i in range(3)]
    x, _ = blobs(8)
    outputs = np.stack([m.predict(x, verbose=0) for m in members])
    plain = tfkd.Distiller(mlp("student"), members)
    np.testing.assert_allclose(plain.teacher_logits(x), outputs.mean(0), rtol=1e-5, atol=1e-6)
    weighted = tfkd.Distiller(mlp("student"), members, teacher_weights=[1, 1, 2])
    np.testing.assert_allclose(
        weighted.teacher_logits(x),
        np.tensordot([0.25, 0.25, 0.5], outputs, axes=1),
        rtol=1e-5,
        atol=1e-6,
    )
    assert plain.teacher == members


def test_ensemble_distillation_loss_uses_the_averaged_teacher():
    members = [mlp(f"teacher{i}", seed=i + 1) for i in range(2)]
    student = mlp("student")
    x, y = blobs(16)
    distiller = tfkd.Distiller(student, members, loss=tfkd.losses.KD(3.0))
    distiller.compile(optimizer="sgd")
    got = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    mean_teacher = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    expected = numpy_kd(mean_teacher, student.predict(x, verbose=0), 3.0).mean()
    assert got["distillation_loss"] == pytest.approx(expected, rel=1e-5)


def test_student_loss_weight_one_matches_plain_student_training():
    data = dataset()
    plain = mlp("plain", batch_norm=True)
    student = mlp("student", batch_norm=True)
    student.set_weights(plain.get_weights())
    plain.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    plain_history = plain.fit(data, epochs=2, verbose=0).history
    distiller = tfkd.Distiller(student, mlp("teacher", seed=1), student_loss_weight=1.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    history = distiller.fit(data, epochs=2, verbose=0).history
    for expected, got in zip(plain.get_weights(), student.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history["loss"], plain_history["loss"], rtol=1e-5)


def test_history_reports_every_loss_part_and_compiled_metric_for_train_and_validation():
    distiller = tfkd.Distiller(mlp("student"), mlp("teacher", seed=1))
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(dataset(), validation_data=dataset(seed=1), epochs=1, verbose=0)
    names = {"loss", "student_loss", "distillation_loss", "accuracy"}
    assert set(history.history) == names | {f"val_{n}" for n in names}


def test_call_returns_student_logits_and_the_student_saves_alone(tmp_path):
    student = mlp("student")
    distiller = tfkd.Distiller(student, mlp("teacher", hidden=32, seed=1))
    x, _ = blobs(8)
    np.testing.assert_allclose(distiller(x), student(x), rtol=1e-6)
    path = str(tmp_path / "student.keras")
    distiller.student.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.count_params() == student.count_params()
    np.testing.assert_allclose(loaded(x), student(x), rtol=1e-6)


def test_sample_weights_apply_to_both_losses():
    x, y = blobs(16)
    weights = np.linspace(0, 2, 16).astype(np.float32)
    student, teacher = mlp("student"), mlp("teacher", seed=1)
    distiller = tfkd.Distiller(student, teacher, loss=tfkd.losses.KD(2.0), student_loss_weight=0.5)
    distiller.compile(optimizer="sgd")
    got = distiller.evaluate(
        x, y, sample_weight=weights, batch_size=16, return_dict=True, verbose=0
    )
    s, t = student.predict(x, verbose=0), teacher.predict(x, verbose=0)
    assert got["student_loss"] == pytest.approx(
        np.sum(weights * numpy_cross_entropy(s, y)) / 16, rel=1e-5
    )
    assert got["distillation_loss"] == pytest.approx(
        np.sum(weights * numpy_kd(t, s, 2.0)) / 16, rel=1e-5
    )


def test_several_weighted_losses_add_up():
    x, y = blobs(16)
    student, teacher = mlp("student"), mlp("teacher", seed=1)
    distiller = tfkd.Distiller(
        student,
        teacher,
        loss=[(tfkd.losses.KD(1.0), 0.25), (tfkd.losses.KD(4.0), 2.0)],
    )
    distiller.compile(optimizer="sgd")
    got = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    s, t = student.predict(x, verbose=0), teacher.predict(x, verbose=0)
    expected = 0.25 * numpy_kd(t, s, 1.0).mean() + 2.0 * numpy_kd(t, s, 4.0).mean()
    assert got["distillation_loss"] == pytest.approx(expected, rel=1e-5)


def _train_weights(strategy, jit_compile=False):
    with strategy.scope():
        student, teacher = mlp("student"), mlp("teacher", seed=1)
        distiller = tfkd.Distiller(student, teacher, student_loss_weight=0.3)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=jit_compile)
    history = distiller.fit(dataset(batch_size=16), epochs=1, verbose=0).history
    return student.get_weights(), history["loss"][0]


def test_mirrored_strategy_on_two_devices_matches_one_device(mirrored_strategy):
    mirrored = mirrored_strategy
    single_weights, single_loss = _train_weights(tf.distribute.get_strategy())
    keras.backend.clear_session()
    mirrored_weights, mirrored_loss = _train_weights(mirrored)
    # Plain SGD: a wrong per-replica loss scale would double the step and fail this.
    for expected, got in zip(single_weights, mirrored_weights):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert mirrored_loss == pytest.approx(single_loss, rel=1e-4)


# Slow: XLA compiles the step twice (3.5 s). The fast suite trains the same step without it.
@pytest.mark.slow
def test_jit_compile_gives_the_same_training():
    eager_weights, _ = _train_weights(tf.distribute.get_strategy(), jit_compile=False)
    keras.backend.clear_session()
    xla_weights, _ = _train_weights(tf.distribute.get_strategy(), jit_compile=True)
    for expected, got in zip(eager_weights, xla_weights):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_get_config_round_trip():
    distiller = tfkd.Distiller(
        mlp("student"),
        [mlp("teacher0", seed=1), mlp("teacher1", seed=2)],
        loss=[(tfkd.losses.KD(2.0), 1.0)],
        student_loss_weight=0.25,
        teacher_weights=[1, 3],
    )
    restored = tfkd.Distiller.from_config(distiller.get_config())
    assert restored.student_loss_weight == 0.25
    assert restored.teacher_weights == (0.25, 0.75)
    assert [t.name for t in restored.teacher] == ["teacher0", "teacher1"]
    assert restored.distillation_terms[0][0].temperature == 2.0
    assert restored.student.count_params() == distiller.student.count_params()


@pytest.mark.parametrize("weight", [-0.1, 1.5, float("nan")])
def test_student_loss_weight_outside_unit_interval_is_rejected(weight):
    with pytest.raises(ValueError, match="student_loss_weight"):
        tfkd.Distiller(mlp("student"), mlp("teacher"), student_loss_weight=weight)


def test_student_loss_weight_of_wrong_type_is_rejected():
    with pytest.raises(TypeError, match="student_loss_weight"):
        tfkd.Distiller(mlp("student"), mlp("teacher"), student_loss_weight="0.5")


def test_output_size_mismatch_is_rejected_naming_both_models():
    inputs = keras.Input((4,))
    wide_teacher = keras.Model(inputs, layers.Dense(5)(inputs), name="wide_teacher")
    message = "wide_teacher' emits 5 logits but student 'student' emits 3"
    with pytest.raises(ValueError, match=message):
        tfkd.Distiller(mlp("student"), wide_teacher)


def test_bad_teachers_are_rejected():
    with pytest.raises(TypeError, match="tf_keras or Keras 3 Model"):
        tfkd.Distiller(mlp("student"), "teacher.keras")
    with pytest.raises(ValueError, match="empty list"):
        tfkd.Distiller(mlp("student"), [])
    with pytest.raises(ValueError, match="one weight per teacher"):
        tfkd.Distiller(mlp("student"), [mlp("t0"), mlp("t1")], teacher_weights=[1.0])
    with pytest.raises(ValueError, match="not all zero"):
        tfkd.Distiller(mlp("student"), [mlp("t0"), mlp("t1")], teacher_weights=[1.0, -1.0])


def test_multi_output_student_is_rejected():
    inputs = keras.Input((4,))
    two_heads = keras.Model(inputs, [layers.Dense(3)(inputs), layers.Dense(3)(inputs)])
    with pytest.raises(ValueError, match="2 outputs"):
        tfkd.Distiller(two_heads, mlp("teacher"))


def test_losses_belong_in_the_constructor_not_compile():
    distiller = tfkd.Distiller(mlp("student"), mlp("teacher"))
    with pytest.raises(ValueError, match="constructor"):
        distiller.compile(optimizer="adam", loss="mse")


def test_bad_loss_spec_is_rejected():
    with pytest.raises(TypeError, match="list of"):
        tfkd.Distiller(mlp("student"), mlp("teacher"), loss=["kd"])
    with pytest.raises(ValueError, match=">= 0"):
        tfkd.Distiller(mlp("student"), mlp("teacher"), loss=[(tfkd.losses.KD(), -1.0)])


def test_label_aware_losses_receive_the_labels():
    from tests.test_losses import numpy_dkd

    x, y = blobs(16)
    student, teacher = mlp("student"), mlp("teacher", seed=1)
    distiller = tfkd.Distiller(student, teacher, loss=tfkd.losses.DKD(1.0, 8.0, 4.0))
    distiller.compile(optimizer="sgd")
    got = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    s, t = student.predict(x, verbose=0), teacher.predict(x, verbose=0)
    expected = numpy_dkd(t.astype(np.float64), s.astype(np.float64), y, 1.0, 8.0, 4.0).mean()
    assert got["distillation_loss"] == pytest.approx(expected, rel=1e-4)


def test_distillation_warmup_ramps_the_distillation_term_from_zero():
    x, y = blobs(16)
    student, teacher = mlp("student"), mlp("teacher", seed=1)
    s, t = student.predict(x, verbose=0), teacher.predict(x, verbose=0)
    ce, kd = numpy_cross_entropy(s, y).mean(), numpy_kd(t, s, 4.0).mean()
    distiller = tfkd.Distiller(
        student, teacher, student_loss_weight=0.5, distillation_warmup_steps=4
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))  # lr 0: the weights stay put
    losses = [
        distiller.train_on_batch(x, y, return_dict=True, reset_metrics=True)["loss"]
        for _ in range(6)
    ]
    expected = [0.5 * ce + 0.5 * min(1.0, step / 4) * kd for step in range(6)]
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    assert distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)[
        "loss"
    ] == pytest.approx(0.5 * ce + 0.5 * kd, rel=1e-5)
    with pytest.raises(ValueError, match="distillation_warmup_steps"):
        tfkd.Distiller(mlp("s"), mlp("t"), distillation_warmup_steps=-1)


def conv_net(name, widths, seed=0):
    initializer = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((6, 6, 2))
    x = inputs
    for i, width in enumerate(widths):
        x = layers.Conv2D(
            width,
            3,
            padding="same",
            activation="relu",
            kernel_initializer=initializer,
            name=f"{name}_conv{i}",
        )(x)
    x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    return keras.Model(
        inputs,
        layers.Dense(NUM_CLASSES, kernel_initializer=initializer, name=f"{name}_logits")(x),
        name=name,
    )


def images(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 6, 2)).astype(np.float32), rng.integers(0, NUM_CLASSES, n)


def test_hint_adds_a_trained_adapter_that_never_joins_the_student(tmp_path):
    from tfkd.distill.features import FeaturePair

    teacher, student = conv_net("teacher", (8, 8), seed=1), conv_net("student", (4, 4))
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    pair = FeaturePair("teacher_conv1", "student_conv1", tfkd.losses.Hint(), weight=2.0)
    distiller = tfkd.Distiller(student, teacher, features=[pair], student_loss_weight=0.5)
    adapter = distiller.taps.adapters[0]
    assert adapter is not None and adapter.name == "adapter_student_conv1"
    x, y = images()
    with tf.GradientTape() as tape:
        _, (student_features,) = distiller._student(x, training=True)
        _, (teacher_features,) = distiller._teacher(x)
        value = distiller.taps.loss([teacher_features], [student_features], y, None)
    grads = tape.gradient(
        value, student.trainable_variables + adapter.trainable_variables + teacher.weights
    )
    n_student = len(student.trainable_variables)
    n_adapter = len(adapter.trainable_variables)
    assert all(g is not None for g in grads[: n_student - 2])  # conv layers feed the feature
    assert all(g is not None for g in grads[n_student : n_student + n_adapter])
    assert all(g is None for g in grads[n_student + n_adapter :])
    projected = adapter(student_features).numpy()
    expected = 2.0 * np.mean((projected - teacher_features.numpy()) ** 2)
    assert float(value) == pytest.approx(expected, rel=1e-5)

    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    kernel_before = adapter.kernel.numpy().copy()
    distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert not np.allclose(adapter.kernel.numpy(), kernel_before)
    for before, after in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    params = student.count_params()
    student.save(tmp_path / "student.keras")
    exported = keras.models.load_model(tmp_path / "student.keras", safe_mode=True)
    assert exported.count_params() == params
    assert not any("adapter" in layer.name for layer in exported.layers)


def test_attention_transfer_needs_no_adapter_and_joins_the_distillation_loss():
    from tests.test_losses import numpy_attention
    from tfkd.distill.features import FeaturePair

    teacher, student = conv_net("teacher", (8, 8), seed=1), conv_net("student", (4, 4))
    pair = FeaturePair(
        "teacher_conv0", "student_conv0", tfkd.losses.AttentionTransfer(), weight=1000.0
    )
    distiller = tfkd.Distiller(student, teacher, loss=[(tfkd.losses.KD(4.0), 1.0)], features=[pair])
    assert distiller.taps.adapters == [None]
    distiller.compile(optimizer="sgd")
    x, y = images()
    got = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    feature = lambda m, n: keras.Model(m.inputs, m.get_layer(n).output).predict(x, verbose=0)  # noqa: E731
    at = np.mean(
        (
            numpy_attention(feature(student, "student_conv0"))
            - numpy_attention(feature(teacher, "teacher_conv0"))
        )
        ** 2
    )
    s, t = student.predict(x, verbose=0), teacher.predict(x, verbose=0)
    assert got["distillation_loss"] == pytest.approx(
        numpy_kd(t, s, 4.0).mean() + 1000 * at, rel=1e-4
    )


def test_feature_pairs_are_validated():
    from tfkd.distill.features import FeaturePair

    teacher, student = conv_net("teacher", (8, 8), seed=1), conv_net("student", (4, 4))
    with pytest.raises(ValueError, match=r"no layer 'conv9'. Its layers: \[.*'student_conv0'"):
        tfkd.Distiller(
            student,
            teacher,
            features=[FeaturePair("teacher_conv0", "conv9", tfkd.losses.Hint())],
        )
    with pytest.raises(ValueError, match="have different ranks"):
        tfkd.Distiller(
            student,
            teacher,
            features=[FeaturePair("teacher_conv0", "student_pool", tfkd.losses.Hint())],
        )
    inputs = keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="strided")(inputs)
    strided = keras.Model(inputs, layers.Dense(NUM_CLASSES)(layers.GlobalAveragePooling2D()(x)))
    message = r"spatial sizes differ \(student \(3, 3\), teacher \(6, 6\)"
    with pytest.raises(ValueError, match=message):
        tfkd.Distiller(
            strided,
            teacher,
            features=[FeaturePair("teacher_conv0", "strided", tfkd.losses.Hint())],
        )
    with pytest.raises(TypeError, match="feature loss"):
        tfkd.Distiller(
            student,
            teacher,
            features=[FeaturePair("teacher_conv0", "student_conv0", tfkd.losses.KD())],
        )
    with pytest.raises(ValueError, match="one teacher"):
        tfkd.Distiller(
            student,
            [teacher, conv_net("t2", (8, 8))],
            features=[
                FeaturePair("teacher_conv0", "student_conv0", tfkd.losses.AttentionTransfer())
            ],
        )


def test_rkd_on_pooled_embeddings_trains_and_round_trips_its_config():
    from tfkd.distill.features import FeaturePair

    teacher, student = conv_net("teacher", (8, 8), seed=1), conv_net("student", (4, 4))
    pair = FeaturePair("teacher_pool", "student_pool", tfkd.losses.RKD(), weight=1.0)
    distiller = tfkd.Distiller(student, teacher, features=[pair], student_loss_weight=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    x, y = images(32)
    history = distiller.fit(x, y, batch_size=16, epochs=3, verbose=0).history
    assert history["distillation_loss"][-1] < history["distillation_loss"][0]
    restored = tfkd.Distiller.from_config(distiller.get_config())
    assert restored.taps.pairs[0].loss.get_config() == tfkd.losses.RKD().get_config()
    assert restored.taps.pairs[0].student_layer == "student_pool"


def test_mixed_precision_scales_the_loss_and_computes_it_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        student, teacher = mlp("student"), mlp("teacher", seed=1)
        distiller = tfkd.Distiller(student, teacher, loss=tfkd.losses.KD(2.0))
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
        assert type(distiller.optimizer).__name__.startswith("LossScaleOptimizer")
        x, y = blobs(32)
        got = distiller.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
        s = student.predict(x, verbose=0).astype(np.float32)
        t = teacher.predict(x, verbose=0).astype(np.float32)
        assert student.predict(x, verbose=0).dtype == np.float16
        # float16 logits, float32 softmax/KL: matches numpy on the same logits.
        assert got["distillation_loss"] == pytest.approx(numpy_kd(t, s, 2.0).mean(), rel=1e-4)
        history = distiller.fit(x, y, batch_size=16, epochs=4, verbose=0).history
        # Training under loss scaling still learns (a broken scale gives NaN or no progress).
        assert history["loss"][-1] < history["loss"][0]
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_unlabeled_examples_learn_from_the_teacher_only():
    """Hard-label loss: the mean over labeled examples; distillation: every example; DKD's
    target class for an unlabeled example is the teacher's top class; accuracy: labeled only.
    Golden values from numpy (DKD: the reference of tests/test_losses.py)."""
    from tests.test_losses import numpy_dkd

    rng = np.random.default_rng(0)
    teacher = rng.normal(0, 2, (6, 4)).astype(np.float32)
    student = rng.normal(0, 1, (6, 4)).astype(np.float32)
    labels = np.array([0, -1, 2, -1, 3, 1])
    distiller = tfkd.Distiller(
        student=keras.Sequential([keras.layers.Dense(4, input_shape=(4,))]),
        teacher=None,
        loss=tfkd.losses.DKD(temperature=2.0),
        student_loss_weight=0.3,
    )
    total, hard, soft = distiller._compute_losses(
        tf.constant(labels), tf.constant(student), tf.constant(teacher), None
    )
    labeled = labels >= 0
    log_p = student - np.log(np.exp(student).sum(-1, keepdims=True))
    expected_hard = -np.mean(log_p[labeled, labels[labeled]])
    filled = np.where(labeled, labels, teacher.argmax(-1))
    expected_soft = numpy_dkd(
        teacher.astype(np.float64), student.astype(np.float64), filled, 1.0, 8.0, 2.0
    ).mean()
    np.testing.assert_allclose(float(hard), expected_hard, rtol=1e-5)
    np.testing.assert_allclose(float(soft), expected_soft, rtol=1e-5)
    np.testing.assert_allclose(float(total), 0.3 * expected_hard + 0.7 * expected_soft, rtol=1e-5)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller._update_trackers(tf.constant(labels), tf.constant(student), None, total, hard, soft)
    accuracy = [m for m in distiller.metrics if m.name == "accuracy"][0].result()
    assert float(accuracy) == pytest.approx(np.mean(student[labeled].argmax(-1) == labels[labeled]))
