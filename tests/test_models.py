import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

import tfkd
from tfkd.keras import keras

FORBIDDEN_LAYERS = ("Rescaling", "Normalization", "Softmax", "Lambda", "TFOpLambda")


def test_registry_lists_the_families_from_the_papers():
    names = tfkd.models.available()
    for expected in ("cnn_tiny", "cnn_small", "cnn_large", "resnet8", "resnet20", "resnet56",
                     "resnet110", "resnet8x4", "resnet32x4", "mobilenetv2"):
        assert expected in names


def test_unknown_model_lists_available_names():
    with pytest.raises(ValueError, match=r"Unknown model 'resnet19'. Available: \[.*'resnet20'"):
        tfkd.models.build("resnet19", (32, 32, 3), 10)


def test_duplicate_registration_is_rejected():
    with pytest.raises(ValueError, match="already registered"):
        tfkd.models.register("resnet20")(lambda shape, classes: None)


@pytest.mark.parametrize(
    "shape, classes, match",
    [((32, 32), 10, "input_shape"), ((32, 0, 3), 10, "input_shape"),
     ((32, 32, 3), 1, "num_classes"), ((32, 32, 3), 10.0, "num_classes")],
)
def test_bad_shapes_and_class_counts_are_rejected(shape, classes, match):
    with pytest.raises(ValueError, match=match):
        tfkd.models.build("cnn_tiny", shape, classes)


def test_resnet_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        tfkd.models.cifar_resnet((32, 32, 3), 10, depth=21, widths=(16, 16, 32, 64), name="bad")


@pytest.mark.parametrize("name, classes, params", [
    # He et al. 2016, Table 6 (CIFAR-10).
    ("resnet20", 10, 0.27e6), ("resnet32", 10, 0.46e6), ("resnet56", 10, 0.85e6),
    ("resnet110", 10, 1.7e6),
    # RepDistiller / CRD (CIFAR-100).
    ("resnet8x4", 100, 1.23e6), ("resnet32x4", 100, 7.43e6),
])
def test_resnet_sizes_match_the_papers(name, classes, params):
    model = tfkd.models.build(name, (32, 32, 3), classes)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == pytest.approx(params, rel=0.03)


def test_mobilenetv2_width_multiplier_shrinks_the_model():
    full = tfkd.models.build("mobilenetv2", (32, 32, 3), 10)
    half = tfkd.models.build("mobilenetv2", (32, 32, 3), 10, alpha=0.5)
    assert half.count_params() < 0.6 * full.count_params()
    assert half.name == "mobilenetv2_0.5"
    with pytest.raises(ValueError, match="alpha"):
        tfkd.models.build("mobilenetv2", (32, 32, 3), 10, alpha=0)


# Deeper members of a family repeat its blocks: the fast tests cover the shallowest of each.
DEEP = {"resnet32", "resnet44", "resnet56", "resnet110", "resnet32x4"}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in DEEP else n
    for n in tfkd.models.available()])
def test_every_model_is_functional_emits_logits_and_survives_qat(name):
    shape = (8, 8, 1) if name.startswith("cnn") else (32, 32, 3)
    model = tfkd.models.build(name, shape, 10)
    assert isinstance(model, keras.Model) and model._is_graph_network
    assert model.output_shape == (None, 10)
    assert model.layers[-1].get_config().get("activation") == "linear"
    kinds = {type(layer).__name__ for layer in model.layers}
    assert not kinds & set(FORBIDDEN_LAYERS), f"{name} contains {kinds & set(FORBIDDEN_LAYERS)}"
    x = np.random.default_rng(0).normal(size=(16, *shape)).astype(np.float32)
    quantized = tfmot.quantization.keras.quantize_model(model)
    wrapped = [layer for layer in quantized.layers
               if type(layer).__name__.startswith("QuantizeWrapper")]
    assert len(wrapped) >= sum(type(layer).__name__ in ("Conv2D", "Dense")
                               for layer in model.layers) // 2
    outputs = quantized(x, training=False).numpy()
    assert outputs.shape == (16, 10) and np.all(np.isfinite(outputs))
