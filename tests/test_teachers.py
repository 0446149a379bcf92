import os

import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import export
from tfkd.distill import teachers
from tfkd.keras import keras

SHAPE = (8, 8, 1)
CLASSES = 3


def images(n=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *SHAPE)).astype(np.float32)


def tiny(seed=0):
    keras.utils.set_random_seed(seed)
    return tfkd.models.build("cnn_tiny", SHAPE, CLASSES)


def keras3_model(seed=0):
    import keras as keras3

    keras3.utils.set_random_seed(seed)
    return keras3.Sequential(
        [
            keras3.Input(SHAPE),
            keras3.layers.Conv2D(4, 3),
            keras3.layers.BatchNormalization(),
            keras3.layers.ReLU(),
            keras3.layers.GlobalAveragePooling2D(),
            keras3.layers.Dense(CLASSES),
        ],
        name="k3",
    )


def reference(model, x):
    """The logits of the original model, computed without tfkd."""
    return np.asarray(model(x, training=False))


def test_tf_keras_model_passes_through_unchanged():
    model = tiny()
    assert teachers.load(model) is model


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_files_give_the_saved_models_logits(tmp_path, suffix):
    model, x = tiny(), images()
    path = str(tmp_path / f"teacher{suffix}")
    model.save(path)
    loaded = teachers.load(path)
    np.testing.assert_allclose(teachers.predict(loaded, x), reference(model, x), atol=1e-6)
    assert teachers.fingerprint(loaded) == teachers.fingerprint(model)


def test_h5_with_a_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    path = str(tmp_path / "lambda.h5")
    model.save(path)
    with pytest.raises(ValueError, match="Lambda layer"):
        teachers.load(path)


def test_saved_model_signature_gives_the_models_logits(tmp_path):
    model, x = tiny(), images()
    path = str(tmp_path / "saved")
    tf.saved_model.save(model, path)
    loaded = teachers.load(path)
    assert isinstance(loaded, keras.Model)
    np.testing.assert_allclose(teachers.predict(loaded, x), reference(model, x), atol=1e-5)
    # Inside a traced function too, as the Distiller calls it.
    graph = tf.function(lambda t: loaded(t, training=False))
    np.testing.assert_allclose(graph(x).numpy(), reference(model, x), atol=1e-5)


def test_saved_model_errors_name_the_choices(tmp_path):
    model = tiny()
    path = str(tmp_path / "saved")
    tf.saved_model.save(model, path)
    with pytest.raises(ValueError, match="serving_default"):
        teachers.from_saved_model(path, signature="nope")
    with pytest.raises(ValueError, match="no output 'nope'"):
        teachers.from_saved_model(path, output="nope")
    os.remove(os.path.join(path, "saved_model.pb"))
    with pytest.raises(ValueError, match="not a SavedModel"):
        teachers.load(path)


def test_keras3_model_through_the_adapter():
    model, x = keras3_model(), images()
    adapted = teachers.load(model)
    assert isinstance(adapted, keras.Model)
    np.testing.assert_allclose(teachers.predict(adapted, x), reference(model, x), atol=1e-6)
    assert adapted.trainable_weights == []
    # The student stays tf_keras and trains against the Keras 3 teacher.
    student = tiny(seed=1)
    distiller = tfkd.Distiller(student, adapted, student_loss_weight=0.5)
    distiller.compile(keras.optimizers.SGD(0.1))
    before = [w.copy() for w in model.get_weights()]
    history = distiller.fit(x, np.array([0, 1, 2, 0, 1, 2]), epochs=1, verbose=0).history
    assert np.isfinite(history["distillation_loss"][0]) and history["distillation_loss"][0] > 0
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_a_raw_keras3_teacher_is_called_through_the_frozen_adapter_by_the_distiller():
    model, x = keras3_model(), images()
    distiller = tfkd.Distiller(tiny(), model)
    (teacher,) = distiller.teachers
    assert teachers.is_foreign(teacher) and not teacher.trainable_weights
    np.testing.assert_allclose(teachers.predict(teacher, x), reference(model, x), atol=1e-6)


def test_keras3_file_is_routed_through_the_adapter(tmp_path):
    model, x = keras3_model(), images()
    path = str(tmp_path / "k3.keras")
    model.save(path)
    loaded = teachers.load(path)
    np.testing.assert_allclose(teachers.predict(loaded, x), reference(model, x), atol=1e-6)
    assert teachers.fingerprint(loaded) == teachers.fingerprint(teachers.load(model))


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_tflite_teacher_matches_its_source_model(tmp_path, mode):
    model, x = tiny(), images(32)
    representative = export.RepresentativeSet(images(64, seed=1), np.zeros(64, np.int64))
    path = str(tmp_path / f"teacher_{mode}.tflite")
    export.write_tflite(path, export.convert(model, mode, representative))
    loaded = teachers.load(path)
    assert isinstance(loaded, teachers.TFLiteTeacher) and loaded.num_classes == CLASSES
    expected = reference(model, x)
    got = teachers.predict(loaded, x)
    if mode == "float32":
        np.testing.assert_allclose(got, expected, atol=1e-5)
    else:
        # int8 error relative to the logits' spread: small on average, bounded everywhere.
        spread = expected.max() - expected.min()
        assert np.abs(got - expected).mean() < 0.05 * spread
        assert np.abs(got - expected).max() < 0.25 * spread
    with pytest.raises(TypeError, match="teacher cache"):
        tfkd.Distiller(tiny(seed=1), loaded)


def test_fingerprint_follows_the_weights():
    a, b = tiny(seed=0), tiny(seed=0)
    assert teachers.fingerprint(a) == teachers.fingerprint(b)
    weights = b.get_weights()
    weights[0] = weights[0] + 1e-3
    b.set_weights(weights)
    assert teachers.fingerprint(a) != teachers.fingerprint(b)


def test_ensemble_prediction_is_the_weighted_mean_of_members():
    members, x = [tiny(seed=0), tiny(seed=1)], images()
    outputs = [reference(m, x) for m in members]
    np.testing.assert_allclose(
        teachers.ensemble_predict(members, x), np.mean(outputs, axis=0), atol=1e-6
    )
    np.testing.assert_allclose(
        teachers.ensemble_predict(members, x, [3.0, 1.0]),
        0.75 * outputs[0] + 0.25 * outputs[1],
        atol=1e-6,
    )


def test_bad_sources_say_what_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        teachers.load(str(tmp_path / "missing.keras"))
    (tmp_path / "model.onnx").write_bytes(b"\0")
    with pytest.raises(ValueError, match="unknown format"):
        teachers.load(str(tmp_path / "model.onnx"))
    with pytest.raises(TypeError, match="Cannot use a int"):
        teachers.load(3)
    with pytest.raises(ValueError, match="at least one"):
        teachers.load_all([])
