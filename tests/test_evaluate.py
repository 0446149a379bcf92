import numpy as np
import pytest

import tfkd
from tfkd import export
from tfkd.keras import keras
from tfkd.measure import parity, runtime
from tfkd.tasks import classification


@pytest.fixture(scope="module")
def setting():
    """A briefly trained digits student, its data, and a copy damaged for int8 only."""
    keras.utils.set_random_seed(0)
    digits = tfkd.data.load("digits")
    train = tfkd.data.batches(digits.train, digits.preprocessing, 64, shuffle=True)
    test = tfkd.data.batches(digits.test, digits.preprocessing, 128)
    student = tfkd.models.build("cnn_small", (8, 8, 1), 10)
    student.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    student.fit(train, epochs=8, verbose=0)
    damaged = keras.models.clone_model(student)
    damaged.set_weights(student.get_weights())
    # One huge channel after block1 dominates its per-tensor int8 range, so every other channel
    # of that tensor rounds to a few levels; in float the channel is harmless to its neighbours.
    bn = damaged.get_layer("block1_bn")
    gamma, beta, mean, var = bn.get_weights()
    gamma[0] *= 500.0
    bn.set_weights([gamma, beta, mean, var])
    return digits, test, student, damaged


def images_and_labels(batches):
    images, labels = zip(*batches.as_numpy_iterator())
    return np.concatenate(images), np.concatenate(labels)


def test_float32_tflite_accuracy_equals_keras_accuracy(setting, tmp_path):
    digits, test, student, _ = setting
    export.export(
        student,
        str(tmp_path),
        ["float32"],
        preprocessing=digits.preprocessing,
        class_names=digits.class_names,
    )
    keras_accuracy = classification.keras_accuracy(student, test)
    images, labels = images_and_labels(test)
    expected = np.mean(student.predict(images, verbose=0).argmax(1) == labels)
    assert keras_accuracy == pytest.approx(expected)
    tflite = classification.tflite_accuracy(
        str(tmp_path / "student_float32.tflite"), test.as_numpy_iterator()
    )
    assert tflite == pytest.approx(keras_accuracy, abs=1 / len(labels) + 1e-9)


def test_quantized_io_is_fed_with_the_models_own_scale_and_zero_point(setting, tmp_path):
    digits, test, student, _ = setting
    card = export.export(
        student,
        str(tmp_path),
        ["int8_io_uint8"],
        preprocessing=digits.preprocessing,
        class_names=digits.class_names,
        representative=export.representative_set(digits, 100),
    )
    entry = card["variants"]["student_int8_io_uint8"]
    classifier = runtime.TFLiteClassifier(str(tmp_path / entry["file"]))
    images, labels = images_and_labels(test)
    scale, zero_point = entry["input"]["scale"], entry["input"]["zero_point"]
    quantized = np.clip(np.round(images / scale + zero_point), 0, 255).astype(np.uint8)
    interpreter = classifier.interpreter
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(quantized.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], quantized)
    interpreter.invoke()
    raw = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    out = entry["output"]
    manual = (raw.astype(np.float32) - out["zero_point"]) * out["scale"]
    np.testing.assert_allclose(classifier.predict(images), manual, rtol=1e-6)
    accuracy = classification.tflite_accuracy(
        str(tmp_path / entry["file"]), test.as_numpy_iterator()
    )
    assert accuracy == pytest.approx(np.mean(manual.argmax(1) == labels))


def test_parity_gate_numbers():
    drops = parity.parity_gate(0.95, {"a": 0.945, "b": 0.96}, max_drop_points=1.0)
    assert drops == pytest.approx({"a": 0.5, "b": -1.0})
    with pytest.raises(parity.ParityError, match=r"(?s)95.00%.*a: 93.00% \(\+2.00 points drop\)"):
        parity.parity_gate(0.95, {"a": 0.93, "b": 0.95})
    with pytest.raises(ValueError, match="max_drop_points"):
        parity.parity_gate(0.9, {}, max_drop_points=-1)
    # A detector's gate speaks of mAP points.
    with pytest.raises(parity.ParityError, match=r"lost more than 3.00 mAP points against the m"):
        parity.parity_gate(0.27, {"qad": 0.233}, 3.0, reference_name="m", metric="mAP")


def test_parity_gate_passes_a_good_int8_model_and_fires_on_a_damaged_one(setting, tmp_path):
    digits, test, student, damaged = setting
    representative = export.representative_set(digits, 100)
    accuracies = {}
    for model, name in ((student, "good"), (damaged, "damaged")):
        export.export(
            model,
            str(tmp_path / name),
            ["int8"],
            preprocessing=digits.preprocessing,
            class_names=digits.class_names,
            representative=representative,
        )
        accuracies[name] = (
            classification.keras_accuracy(model, test),
            classification.tflite_accuracy(
                str(tmp_path / name / "student_int8.tflite"), test.as_numpy_iterator()
            ),
        )
    parity.parity_gate(accuracies["good"][0], {"int8": accuracies["good"][1]})
    with pytest.raises(parity.ParityError, match="lost more than 1.00 accuracy points"):
        parity.parity_gate(accuracies["damaged"][0], {"int8": accuracies["damaged"][1]})


def test_localize_drop_names_the_damaged_layer(setting, tmp_path):
    digits, test, _, damaged = setting
    export.export(
        damaged,
        str(tmp_path),
        ["float32", "int8"],
        preprocessing=digits.preprocessing,
        class_names=digits.class_names,
        output="logits",
        representative=export.representative_set(digits, 100),
    )
    images, _ = images_and_labels(test)
    errors = parity.localize_drop(
        str(tmp_path / "student_float32.tflite"), str(tmp_path / "student_int8.tflite"), images[:64]
    )
    assert "block1" in errors[0].tensor
    assert errors[0].added_error > 5 * max(e.added_error for e in errors[1:])


@pytest.mark.parametrize("content", [b"", b"not a flatbuffer", b"TFL3" + b"\0" * 100])
def test_corrupt_or_truncated_tflite_gives_a_clear_error(tmp_path, content):
    path = tmp_path / "broken.tflite"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="is not a valid .tflite model"):
        runtime.load_interpreter(str(path))


def test_truncated_real_model_gives_a_clear_error(setting, tmp_path):
    digits, _, student, _ = setting
    export.export(
        student,
        str(tmp_path),
        ["float32"],
        preprocessing=digits.preprocessing,
        class_names=digits.class_names,
    )
    content = (tmp_path / "student_float32.tflite").read_bytes()
    (tmp_path / "half.tflite").write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        classification.tflite_accuracy(str(tmp_path / "half.tflite"), [])


def test_missing_tflite_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="No .tflite file"):
        runtime.load_interpreter(str(tmp_path / "absent.tflite"))


def test_precise_batch_norm_takes_the_statistics_of_the_weights_as_they_are():
    """Early in training Keras' moving averages still hold their initial values; the copy's
    statistics are the mean over batches of the batch statistics, computed here with numpy."""
    rng = np.random.default_rng(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="dense")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="norm")(hidden))
    batches = [rng.normal(5.0, 2.0, size=(32, 4)).astype("float32") for _ in range(4)]
    copy = tfkd.measure.batch_norm.precise_batch_norm(model, iter(batches), batches=3)
    kernel, bias = model.get_layer("dense").get_weights()
    activations = [b @ kernel + bias for b in batches[:3]]  # the fourth is never read
    norm = copy.get_layer("norm")
    np.testing.assert_allclose(
        norm.moving_mean.numpy(),
        np.mean([a.mean(axis=0) for a in activations], axis=0),
        rtol=1e-5,
        atol=1e-5,
    )
    # Keras' batch variance is the biased one (divided by the batch size).
    np.testing.assert_allclose(
        norm.moving_variance.numpy(),
        np.mean([a.var(axis=0) for a in activations], axis=0),
        rtol=1e-4,
        atol=1e-5,
    )
    # The model itself keeps its initial statistics; so does its own layer's momentum.
    original = model.get_layer("norm")
    np.testing.assert_array_equal(original.moving_mean.numpy(), np.zeros(3))
    assert original.momentum == 0.99
    # Distiller batches ({"image": ...}, labels) are read as images.
    labelled = [({"image": b}, np.zeros(32)) for b in batches]
    again = tfkd.measure.batch_norm.precise_batch_norm(model, labelled, batches=3)
    np.testing.assert_allclose(
        again.get_layer("norm").moving_mean.numpy(), norm.moving_mean.numpy(), rtol=1e-6
    )
    with pytest.raises(ValueError, match="empty"):
        tfkd.measure.batch_norm.precise_batch_norm(model, [], batches=3)
