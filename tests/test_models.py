import functools
import re

import numpy as np
import pytest

import tfkd
from tfkd.keras import keras, tfmot

FORBIDDEN_LAYERS = ("Rescaling", "Normalization", "Softmax", "Lambda", "TFOpLambda")


def test_registry_lists_the_families_from_the_papers():
    names = tfkd.models.available()
    for expected in (
        "cnn_tiny",
        "cnn_small",
        "cnn_large",
        "resnet8",
        "resnet20",
        "resnet56",
        "resnet110",
        "resnet8x4",
        "resnet32x4",
        "mobilenetv2",
    ):
        assert expected in names


def test_unknown_model_lists_available_names():
    with pytest.raises(ValueError, match=r"Unknown model 'resnet19'. Available: \[.*'resnet20'"):
        tfkd.models.build("resnet19", (32, 32, 3), 10)


def test_duplicate_registration_is_rejected():
    with pytest.raises(ValueError, match="already registered"):
        tfkd.models.register("resnet20")(lambda shape, classes: None)


@pytest.mark.parametrize(
    "shape, classes, match",
    [
        ((32, 32), 10, "input_shape"),
        ((32, 0, 3), 10, "input_shape"),
        ((32, 32, 3), 1, "num_classes"),
        ((32, 32, 3), 10.0, "num_classes"),
    ],
)
def test_bad_shapes_and_class_counts_are_rejected(shape, classes, match):
    with pytest.raises(ValueError, match=match):
        tfkd.models.build("cnn_tiny", shape, classes)


def test_resnet_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        tfkd.models.cifar_resnet((32, 32, 3), 10, depth=21, widths=(16, 16, 32, 64), name="bad")


@pytest.mark.parametrize(
    "name, classes, params",
    [
        # He et al. 2016, Table 6 (CIFAR-10).
        ("resnet20", 10, 0.27e6),
        # The deeper ones only stack more of the same blocks (building them takes 5-9 s each).
        pytest.param("resnet32", 10, 0.46e6, marks=pytest.mark.slow),
        pytest.param("resnet56", 10, 0.85e6, marks=pytest.mark.slow),
        pytest.param("resnet110", 10, 1.7e6, marks=pytest.mark.slow),
        # RepDistiller / CRD (CIFAR-100).
        ("resnet8x4", 100, 1.23e6),
        pytest.param("resnet32x4", 100, 7.43e6, marks=pytest.mark.slow),
    ],
)
def test_resnet_sizes_match_the_papers(name, classes, params):
    model = tfkd.models.build(name, (32, 32, 3), classes)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == pytest.approx(params, rel=0.03)


def test_mobilenetv2_refuses_a_width_multiplier_that_is_not_positive():
    with pytest.raises(ValueError, match="alpha"):
        tfkd.models.build("mobilenetv2", (32, 32, 3), 10, alpha=0)


@pytest.mark.slow  # 16 s to build two; the fast suite has the width check above.
def test_mobilenetv2_width_multiplier_shrinks_the_model():
    full = tfkd.models.build("mobilenetv2", (32, 32, 3), 10)
    half = tfkd.models.build("mobilenetv2", (32, 32, 3), 10, alpha=0.5)
    assert half.count_params() < 0.6 * full.count_params()
    assert half.name == "mobilenetv2_0.5"


# Deeper members of a family repeat its blocks: the fast tests cover the shallowest of each, the
# slow suite every other one.
SHALLOWEST = {"cnn_tiny", "resnet8", "resnet8x4"}
# The mobile families (tested through tfkd's QAT and an int8 conversion below).
MOBILE = {n for n in tfkd.models.available() if n.startswith(("mobilenet_", "efficientnet_"))}
# MobileNetV3's hard-swish is built by keras.applications from raw TF ops.
HARD_SWISH = {"mobilenet_v3_small", "mobilenet_v3_large"}
# One member of each mobile family goes through QAT and int8 conversion; the others only repeat
# its layer structures (test_other_mobile_models_only_repeat_tested_structures).
MOBILE_TESTED = (
    "mobilenet_v3_small_minimalistic",
    "mobilenet_v3_small",
    "mobilenet_v2_0.35",
    "efficientnet_lite0",
)


def _family_root(name: str) -> str:
    """The shallowest member of `name`'s family (mobilenetv2 is a family of its own)."""
    if name.startswith("cnn_"):
        return "cnn_tiny"
    if re.fullmatch(r"resnet\d+x4", name):
        return "resnet8x4"
    if re.fullmatch(r"resnet\d+", name):
        return "resnet8"
    return name


@functools.cache
def _built(name: str) -> keras.Model:
    return tfkd.models.build(name, (8, 8, 1) if name.startswith("cnn") else (32, 32, 3), 10)


def _layer_configs(model: keras.Model) -> set:
    """Each layer's type and configuration, without what depth and width change (names, filter
    and unit counts)."""
    ignored = {"name", "filters", "units", "batch_input_shape"}
    return {
        (
            type(layer).__name__,
            repr(sorted((k, v) for k, v in layer.get_config().items() if k not in ignored)),
        )
        for layer in model.layers
    }


@pytest.mark.parametrize(
    "name",
    [
        n if n in SHALLOWEST else pytest.param(n, marks=pytest.mark.slow)
        for n in tfkd.models.available()
        if n not in MOBILE
    ],
)
def test_every_model_is_functional_emits_logits_and_quantizes(name):
    """Every model is a functional graph with a linear head and no preprocessing layers; the
    shallowest member of each family survives QAT. A deeper member stacks that member's layers,
    configured alike, so its QAT (five to twenty seconds each) would repeat the same wrappers."""
    model = _built(name)
    assert isinstance(model, keras.Model) and model._is_graph_network
    assert model.output_shape == (None, 10)
    assert model.layers[-1].get_config().get("activation") == "linear"
    kinds = {type(layer).__name__ for layer in model.layers}
    assert not kinds & set(FORBIDDEN_LAYERS), f"{name} contains {kinds & set(FORBIDDEN_LAYERS)}"
    root = _family_root(name)
    if root != name:
        assert _layer_configs(model) <= _layer_configs(_built(root)), name
        return
    shape = model.input_shape[1:]
    x = np.random.default_rng(0).normal(size=(16, *shape)).astype(np.float32)
    quantized = tfmot.quantization.keras.quantize_model(model)
    wrapped = [
        layer for layer in quantized.layers if type(layer).__name__.startswith("QuantizeWrapper")
    ]
    assert (
        len(wrapped)
        >= sum(type(layer).__name__ in ("Conv2D", "Dense") for layer in model.layers) // 2
    )
    outputs = quantized(x, training=False).numpy()
    assert outputs.shape == (16, 10) and np.all(np.isfinite(outputs))


def _structures(name):
    model = tfkd.models.build(name, (32, 32, 3), 10)
    return {
        (
            type(layer).__name__,
            str(layer.get_config().get("strides")),
            str(layer.get_config().get("max_value")),
        )
        for layer in model.layers
    }


@pytest.mark.slow
def test_other_mobile_models_only_repeat_tested_structures():
    tested = set().union(*(_structures(n) for n in MOBILE_TESTED))
    for name in sorted(MOBILE - set(MOBILE_TESTED)):
        assert _structures(name) <= tested, (name, _structures(name) - tested)


@pytest.mark.slow
@pytest.mark.parametrize("name", MOBILE_TESTED)
def test_mobile_students_pass_the_qat_doctor_and_convert_to_int8(name):
    """The students users ship: flat graphs the QAT doctor accepts, quantized by tfkd's QAT
    and converted to a uint8-in/uint8-out model that LiteRT runs and that agrees with the QAT
    model on most random inputs."""
    model = tfkd.models.build(name, (48, 48, 3), 5)
    assert model._is_graph_network and model.output_shape == (None, 5)
    kinds = {type(layer).__name__ for layer in model.layers}
    allowed = {"TFOpLambda"} if name in HARD_SWISH else set()
    assert not kinds & (set(FORBIDDEN_LAYERS) - allowed), kinds & set(FORBIDDEN_LAYERS)
    report = tfkd.quantize.doctor(model)
    assert report.ok, str(report)
    if name not in HARD_SWISH:
        assert not report.findings, str(report)
    qat = tfkd.quantize.quantize_student(model)
    x = np.random.default_rng(0).uniform(-1, 1, size=(8, 48, 48, 3)).astype(np.float32)
    reference = qat(x, training=False).numpy()
    content = tfkd.export.convert(qat, "int8_io_uint8")
    interpreter = tfkd.measure.runtime.load_interpreter(content)
    detail = interpreter.get_input_details()[0]
    assert detail["dtype"] == np.uint8
    scale, zero = detail["quantization"]
    out_detail = interpreter.get_output_details()[0]
    out_scale, out_zero = out_detail["quantization"]
    agree = 0
    for image, expected in zip(x, reference):
        interpreter.set_tensor(
            detail["index"], np.clip(np.round(image / scale + zero), 0, 255)[None].astype(np.uint8)
        )
        interpreter.invoke()
        got = (
            interpreter.get_tensor(out_detail["index"]).astype(np.float32) - out_zero
        ) * out_scale
        agree += int(np.argmax(got) == np.argmax(expected))
    assert agree >= 6, f"int8 top-1 agrees with the QAT model on {agree}/8 inputs"


# Every keras.applications student goes through the same builder: one per backbone family.
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v2_0.35"])
def test_batch_normalisation_follows_a_small_dataset(name):
    """keras.applications' momentum 0.999 leaves the moving statistics near their initial
    values after a few thousand photos: inference-mode predictions then collapse to one
    class (seen: validation accuracy at chance while training accuracy rose)."""
    model = tfkd.models.build(name, (32, 32, 3), 5)
    momenta = {
        layer.momentum
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert momenta and max(momenta) <= 0.99, momenta
    teacher = tfkd.models.pretrained.build(
        "keras_applications:MobileNetV3Small",
        (32, 32, 3),
        5,
        tfkd.data.photo_preprocessing((32, 32), 3),
    )
    assert (
        max(
            layer.momentum
            for layer in teacher.layers
            if isinstance(layer, keras.layers.BatchNormalization)
        )
        <= 0.99
    )


def test_imagenet_weights_are_only_offered_where_they_exist(tmp_path, monkeypatch):
    assert "mobilenet_v3_small_minimalistic" in tfkd.models.with_imagenet_weights()
    assert "cnn_small" not in tfkd.models.with_imagenet_weights()
    with pytest.raises(ValueError, match="'cnn_small' has no ImageNet weights"):
        tfkd.models.build("cnn_small", (16, 16, 3), 5, weights="imagenet")
    # No network here: the error says which file to put where.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    with pytest.raises(
        ValueError,
        match=r"could not be downloaded.*weights_mobilenet_v3_small"
        r"_minimalistic.*\.h5 .*keras_home/models/",
    ):
        tfkd.models.build("mobilenet_v3_small_minimalistic", (96, 96, 3), 5, weights="imagenet")


def test_student_weights_file_loads_by_layer_name_and_refuses_other_shapes(tmp_path):
    source = tfkd.models.build("cnn_small", (16, 16, 3), 5)
    path = str(tmp_path / "student.h5")
    source.save_weights(path)
    loaded = tfkd.models.build("cnn_small", (16, 16, 3), 5, weights=path)
    for a, b in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Same architecture, other class count: the head does not fit, and the message says where.
    with pytest.raises(
        ValueError,
        match=r"layer 'logits' has weights of shapes "
        r"\[\(32, 7\), \(7,\)\] but the file holds \[\(32, 5\), \(5,\)\]",
    ):
        tfkd.models.build("cnn_small", (16, 16, 3), 7, weights=path)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="unrelated")])
    other.save_weights(str(tmp_path / "other.h5"))
    with pytest.raises(ValueError, match="shares no layer name"):
        tfkd.models.build("cnn_small", (16, 16, 3), 5, weights=str(tmp_path / "other.h5"))
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not an HDF5 weights file"):
        tfkd.models.build("cnn_small", (16, 16, 3), 5, weights=str(tmp_path / "junk.h5"))


@pytest.mark.parametrize("file_name", ["student.h5", "student_saved_model", "student.keras"])
def test_a_student_file_loads_trainable_with_its_weights(tmp_path, file_name):
    keras.utils.set_random_seed(0)
    model = tfkd.models.build("cnn_tiny", (8, 8, 1), 10)
    path = str(tmp_path / file_name)
    model.save(path)
    assert tfkd.models.is_model_file(path)
    loaded = tfkd.models.load(path)
    assert isinstance(loaded, keras.Model) and loaded.trainable_weights
    images = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(loaded(images).numpy(), model(images).numpy(), atol=1e-6)


def test_a_student_file_that_keras_did_not_save_is_refused(tmp_path):
    import tensorflow as tf

    tf.saved_model.save(tf.Module(), str(tmp_path / "plain"))
    with pytest.raises(ValueError, match="without keras_metadata.pb"):
        tfkd.models.load(str(tmp_path / "plain"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tfkd.models.load(str(tmp_path / "missing.keras"))
