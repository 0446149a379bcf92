import json
import os
import shutil

import numpy as np
import pytest

import tfkd
from tfkd import export, quantize
from tfkd.keras import keras
from tfkd.measure import runtime


@pytest.fixture(scope="module")
def digits():
    return tfkd.data.load("digits")


@pytest.fixture(scope="module")
def trained(digits):
    """A float student trained briefly on digits, and its QAT fine-tuned copy."""
    keras.utils.set_random_seed(0)
    train = tfkd.data.batches(digits.train, digits.preprocessing, 64, shuffle=True)
    student = tfkd.models.build("cnn_small", (8, 8, 1), 10)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    student.compile(keras.optimizers.Adam(3e-3), loss)
    student.fit(train, epochs=8, verbose=0)
    qat = quantize.quantize_student(student)
    qat.compile(keras.optimizers.Adam(1e-4), loss)
    qat.fit(train, epochs=1, verbose=0)
    return student, qat


@pytest.fixture(scope="module")
def exported(trained, digits, tmp_path_factory):
    """The float student in every mode and the QAT student in the integer ones, in one
    directory: a conversion costs seconds, and the tests below only read these files."""
    out = tmp_path_factory.mktemp("exported")
    representative = export.representative_set(digits, 50)
    for model, name, modes in (
        (trained[0], "float", export.MODES),
        (trained[1], "qat", export.INTEGER_MODES),
    ):
        export.export(
            model,
            str(out),
            modes,
            preprocessing=digits.preprocessing,
            class_names=digits.class_names,
            representative=representative,
            name=name,
            source_run="runs/x",
        )
    return out, representative


def normalized_test_split(digits, n=None):
    images, labels = zip(*digits.test.as_numpy_iterator())
    images = digits.preprocessing.normalize(np.stack(images)).numpy()
    return (images, np.array(labels)) if n is None else (images[:n], np.array(labels[:n]))


def integer_ops_report(path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=path,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [
        (op["op_name"], [np.dtype(tensors[i]["dtype"]).name for i in op["outputs"]])
        for op in interpreter._get_ops_details()
    ]


def test_representative_set_is_class_balanced_and_deterministic(digits):
    first = export.representative_set(digits, 25)
    second = export.representative_set(digits, 25)
    assert first.sha256 == second.sha256
    assert np.bincount(first.labels).tolist() == [3] * 5 + [2] * 5
    assert first.labels[:10].tolist() == list(range(10))  # round robin: any prefix is balanced
    raw = np.stack([x for x, y in digits.train.as_numpy_iterator() if y == 0][:3])
    np.testing.assert_allclose(first.images[first.labels == 0], raw / 16.0 / 0.5 - 1.0, atol=1e-6)
    assert first.describe()["size"] == 25


@pytest.mark.parametrize("per_class, hidden", [((12, 3, 7), 0), ((12, 3, 7), 5), ((4, 4, 4), 2)])
def test_largest_representative_size_is_the_largest_set_that_can_be_filled(per_class, hidden):
    import dataclasses

    import tensorflow as tf

    labels = np.concatenate(
        [np.full(n, c) for c, n in enumerate(per_class)] + [np.full(hidden, tfkd.data.UNLABELED)]
    ).astype(np.int64)
    images = np.zeros((labels.size, 8, 8, 1), np.uint8)
    splits = dataclasses.replace(
        tfkd.data.load("digits"),
        class_names=("a", "b", "c"),
        train=tf.data.Dataset.from_tensor_slices((images, labels)),
    )
    largest = export.largest_representative_size(labels, 3)
    # The real thing decides: the largest size fills, one more does not.
    assert len(export.representative_set(splits, largest).labels) == largest
    with pytest.raises(ValueError, match="too few images"):
        export.representative_set(splits, largest + 1)


@pytest.mark.parametrize("size", [0, 9, "100"])
def test_representative_set_smaller_than_class_count_is_rejected(digits, size):
    with pytest.raises(ValueError, match="at least one image per class"):
        export.representative_set(digits, size)


def test_representative_set_larger_than_the_data_is_rejected(digits):
    with pytest.raises(ValueError, match="too few images"):
        export.representative_set(digits, 5000)


def test_unknown_mode_lists_the_valid_ones(trained):
    message = r"Unknown quantization mode 'int4'. Available: \['float32'"
    with pytest.raises(ValueError, match=message):
        export.convert(trained[0], "int4")
    with pytest.raises(ValueError, match="quantization-aware"):
        export.convert(trained[1], "float16")
    with pytest.raises(ValueError, match="representative set"):
        export.convert(trained[0], "int8")


def test_qat_int8_tflite_matches_the_qat_keras_model(trained, digits, tmp_path):
    _, qat = trained
    card = export.export(
        qat,
        str(tmp_path),
        ["int8"],
        preprocessing=digits.preprocessing,
        class_names=digits.class_names,
        name="qat",
        output="logits",
    )
    entry = card["variants"]["qat_int8"]
    images, _ = normalized_test_split(digits, 128)
    tflite = runtime.TFLiteClassifier(str(tmp_path / entry["file"])).predict(images)
    keras_logits = qat(images, training=False).numpy()
    # Same fake-quantized arithmetic; integer kernels round differently by a few output steps.
    low, high = [
        float(w.numpy())
        for w in qat.get_layer("quant_logits").weights
        if "post_activation_m" in w.name
    ]
    output_step = (high - low) / 255
    np.testing.assert_allclose(tflite, keras_logits, atol=3 * output_step + 1e-5)
    assert np.mean(tflite.argmax(1) == keras_logits.argmax(1)) >= 0.98


@pytest.mark.parametrize("kind, mode", [("float", "float32"), ("float", "int8"), ("qat", "int8")])
def test_conversion_writes_the_file_the_converters_keras_path_writes(trained, digits, kind, mode):
    """tfkd converts a traced inference call (no SavedModel detour): the file must be the
    one `TFLiteConverter.from_keras_model` makes on its frozen-graph path, but for the byte
    naming the source."""
    import tensorflow as tf

    model = trained[0] if kind == "float" else trained[1]
    representative = export.representative_set(digits, 20)
    ours = export.convert(model, mode, representative)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.experimental_lower_to_saved_model = False
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        calibration = representative.images
        if kind == "float":  # a QAT model carries its own ranges
            converter.representative_dataset = lambda: (
                [calibration[i : i + 1]] for i in range(len(calibration))
            )
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    theirs = converter.convert()
    assert len(ours) == len(theirs)
    assert sum(a != b for a, b in zip(ours, theirs)) <= 1
    images, _ = normalized_test_split(digits, 64)
    np.testing.assert_array_equal(
        runtime.TFLiteClassifier(ours).predict(images),
        runtime.TFLiteClassifier(theirs).predict(images),
    )


@pytest.mark.parametrize("mode", export.INTEGER_MODES)
def test_integer_models_hold_only_integer_ops_apart_from_requested_float_io(exported, mode):
    out, _ = exported
    card = json.loads((out / "model_card.json").read_text())
    for name in ("float", "qat"):  # post-training quantization, and the QAT student
        ops = integer_ops_report(str(out / card["variants"][f"{name}_{mode}"]["file"]))
        float_ops = [(op, dtypes) for op, dtypes in ops if "float32" in dtypes]
        if mode == "int8":  # float I/O: exactly one DEQUANTIZE back to float at the end
            assert [op for op, _ in float_ops] == ["DEQUANTIZE"]
            assert ops[0][0] == "QUANTIZE"
        else:
            assert float_ops == []
        assert {op for op, _ in ops} >= {"CONV_2D", "FULLY_CONNECTED"}


def test_int8_and_uint8_io_predict_like_float_io_on_real_images(exported, digits):
    out, _ = exported
    card = json.loads((out / "model_card.json").read_text())
    modes = ["int8", "int8_io_int8", "int8_io_uint8"]
    images, labels = normalized_test_split(digits)
    files = {m: str(out / card["variants"][f"qat_{m}"]["file"]) for m in modes}
    predictions = {
        m: runtime.TFLiteClassifier(f).predict(images).argmax(1) for m, f in files.items()
    }
    assert np.mean(predictions["int8_io_int8"] == predictions["int8"]) >= 0.99
    assert np.mean(predictions["int8_io_uint8"] == predictions["int8"]) >= 0.99
    assert np.mean(predictions["int8"] == labels) > 0.85
    uint8_input = card["variants"]["qat_int8_io_uint8"]["input"]
    assert uint8_input["dtype"] == "uint8" and 0 < uint8_input["scale"] < 1
    assert 0 <= uint8_input["zero_point"] <= 255


def test_every_mode_writes_file_labels_and_a_card_that_checks_out(exported, digits):
    out, representative = exported
    card = json.loads((out / "model_card.json").read_text())
    assert set(card["variants"]) == {f"float_{m}" for m in export.MODES} | {
        f"qat_{m}" for m in export.INTEGER_MODES
    }
    assert (out / "labels.txt").read_text().split() == list(digits.class_names)
    assert card["preprocessing"]["mean"] == [0.5] and card["preprocessing"]["scale"] == 1 / 16
    assert card["representative_set"]["sha256"] == representative.sha256
    sizes = {m: card["variants"][f"float_{m}"]["size_bytes"] for m in export.MODES}
    assert sizes["int8"] < 0.5 * sizes["float32"] and sizes["float16"] < 0.7 * sizes["float32"]
    for entry in card["variants"].values():
        assert os.path.getsize(out / entry["file"]) == entry["size_bytes"]
    assert card["variants"]["float_float16"]["quantization"] == "float16"
    assert card["variants"]["qat_int8_io_uint8"]["quantization_aware"] is True
    assert card["variants"]["float_int8_io_uint8"]["quantization_aware"] is False
    export.check_card(str(out))
    assert not [f for f in os.listdir(out) if ".tmp" in f]


def test_a_replaced_file_no_longer_matches_its_card(exported, tmp_path):
    shutil.copytree(exported[0], tmp_path, dirs_exist_ok=True)
    export.check_card(str(tmp_path))
    (tmp_path / "float_float32.tflite").write_bytes(
        (tmp_path / "float_dynamic.tflite").read_bytes()
    )
    with pytest.raises(ValueError, match="does not match model_card.json"):
        export.check_card(str(tmp_path))


def test_labels_must_match_the_model(trained, digits, tmp_path):
    with pytest.raises(ValueError, match="emits 10 logits but 3 labels"):
        export.export(
            trained[0],
            str(tmp_path),
            ["float32"],
            preprocessing=digits.preprocessing,
            class_names=["a", "b", "c"],
        )


def test_a_failed_write_leaves_no_file(trained, digits, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("converter crashed")

    export.export(
        trained[0],
        str(tmp_path),
        ["float32"],
        preprocessing=digits.preprocessing,
        class_names=digits.class_names,
    )
    before = sorted(os.listdir(tmp_path))
    monkeypatch.setattr(export.conversion, "convert", crash)
    with pytest.raises(RuntimeError):
        export.export(
            trained[0],
            str(tmp_path),
            ["dynamic"],
            preprocessing=digits.preprocessing,
            class_names=digits.class_names,
        )
    assert sorted(os.listdir(tmp_path)) == before
    with pytest.raises(ValueError, match="not a valid .tflite"):
        export.write_tflite(str(tmp_path / "bad.tflite"), b"TFL3" + b"\0" * 64)
    assert not (tmp_path / "bad.tflite").exists()


# Deeper members of a family repeat the blocks of the shallow one (converting resnet110 alone takes
# minutes on 2 cores); test_deeper_models_only_repeat_converted_structures keeps that true.
# tfkd's CIFAR mobilenetv2 repeats the blocks of keras.applications' MobileNetV2, which
# tests/test_models.py takes through QAT and an int8 conversion (MOBILE_CONVERTED).
CONVERTED = (
    "cnn_tiny",
    "cnn_small",
    "cnn_large",
    "resnet8",
    "resnet14",
    "resnet8x4",
)
MOBILE_CONVERTED = ("mobilenet_v2_0.35",)


def _shape(name):
    return (8, 8, 1) if name.startswith("cnn") else (32, 32, 3)


def _layer_kinds(name):
    model = tfkd.models.build(name, _shape(name), 10)
    return {
        (
            type(layer).__name__,
            str(layer.get_config().get("strides")),
            str(layer.get_config().get("max_value")),
        )
        for layer in model.layers
    }


@pytest.mark.slow  # it builds every model (15 s): a check of the list above, slow like it
def test_deeper_models_only_repeat_converted_structures():
    from tests.test_models import MOBILE_TESTED

    assert set(MOBILE_CONVERTED) <= set(MOBILE_TESTED)
    converted = set().union(*(_layer_kinds(n) for n in CONVERTED + MOBILE_CONVERTED))
    # The mobile families have their own conversion tests (tests/test_models.py).
    mobile = {n for n in tfkd.models.available() if n.startswith(("mobilenet_", "efficientnet_"))}
    for name in set(tfkd.models.available()) - set(CONVERTED) - mobile:
        assert _layer_kinds(name) <= converted, name


@pytest.mark.slow
@pytest.mark.parametrize("name", CONVERTED)
def test_every_model_structure_survives_qat_and_int8_conversion(name):
    shape = _shape(name)
    qat = quantize.quantize_student(tfkd.models.build(name, shape, 10))
    images = np.random.default_rng(0).normal(size=(4, *shape)).astype(np.float32)
    qat(images, training=True)
    content = export.convert(qat, "int8_io_int8")
    logits = runtime.TFLiteClassifier(content).predict(images)
    assert logits.shape == (4, 10) and np.all(np.isfinite(logits))


def test_representative_set_tops_up_short_classes_with_unlabeled_images():
    hidden = tfkd.data.hide_labels(tfkd.data.load("digits", seed=0), 0.1, seed=0)
    labels = tfkd.data.train_labels(hidden)
    representative = tfkd.export.representative_set(hidden, 200)
    assert len(representative.images) == 200
    per_class = np.bincount(labels[labels >= 0], minlength=10)
    taken = representative.describe()["per_class"]
    # Every labeled image of a class below its quota of 20, and no unlabeled one as a class.
    assert taken == [min(20, int(n)) for n in per_class]
    assert representative.describe()["unlabeled"] == 200 - sum(taken)


def test_calibration_reports_its_progress_over_the_representative_images(trained, digits):
    calls = []
    representative = export.representative_set(digits, 20)
    export.convert(trained[0], "int8", representative, progress=lambda d, t: calls.append((d, t)))
    # The converter walks the whole set once, in order.
    assert calls == [(i, 20) for i in range(1, 21)]
