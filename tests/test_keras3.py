"""tfkd.models.keras3: Keras 3 models as trainable tf_keras twins and back, checked on outputs."""

import numpy as np
import pytest

import tfkd
from tfkd.keras import keras, keras3
from tfkd.models import keras3 as convert

k3 = keras3()
TOLERANCE = 1e-5


def _randomized_batch_norm(model):
    """Moving statistics away from 0/1, so a twin that ignored them would disagree."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights(
                [w + 0.5 * rng.random(w.shape).astype("float32") for w in layer.get_weights()]
            )
    return model


def _every_layer_model():
    """A Keras 3 functional model using each layer family the converter supports."""
    layers = k3.layers
    inputs = k3.Input((12, 12, 3), name="pixels")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    norm = layers.Normalization()
    norm.adapt(np.random.default_rng(0).random((8, 12, 12, 3)).astype("float32"))
    x = norm(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2D(8, 3, activation="relu6")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("hard_swish")(x)
    y = layers.DepthwiseConv2D(3, padding="same", activation="hard_sigmoid")(x)
    z = layers.SeparableConv2D(8, 3, padding="same", activation="silu")(x)
    x = layers.Add()([y, z])
    gate = layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = layers.Conv2D(8, 1, activation="sigmoid")(gate)
    x = layers.Multiply()([x, gate])
    x = layers.Concatenate()([layers.MaxPooling2D(2)(x), layers.AveragePooling2D(2)(x)])
    x = layers.ReLU(max_value=6.0)(x * 2.0 + 1.0)  # keras.ops arithmetic on tensors
    x = layers.Dropout(0.3)(x)
    x = layers.Reshape((6 * 6, 16))(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(5, activation="gelu")(layers.Dense(16, activation="swish")(x))
    return _randomized_batch_norm(k3.Model(inputs, outputs, name="every_layer"))


def _agree(reference, twin, shape, scale=1.0):
    images = (np.random.default_rng(2).random((3, *shape)) * scale).astype("float32")
    expected = np.asarray(reference(images, training=False))
    np.testing.assert_allclose(
        np.asarray(twin(images, training=False)), expected, atol=TOLERANCE, rtol=0
    )
    return images, expected


def test_every_supported_layer_family_converts_to_keras_2_and_back_with_the_same_outputs():
    model = _every_layer_model()
    twin = convert.to_keras2(model)
    assert isinstance(twin, keras.Model) and twin.name == "every_layer"
    assert twin.input_names == ["pixels"]
    images, expected = _agree(model, twin, (12, 12, 3), scale=255.0)
    back = convert.to_keras3(twin)
    assert isinstance(back, k3.Model)
    np.testing.assert_allclose(
        np.asarray(back(images, training=False)), expected, atol=TOLERANCE, rtol=0
    )
    # Trainable, not frozen: the twin owns copies of the weights.
    assert twin.trainable_weights and len(twin.get_weights()) >= len(model.get_weights())


def test_a_sequential_model_converts():
    model = k3.Sequential(
        [
            k3.Input((8, 8, 1)),
            k3.layers.Conv2D(4, 3, activation="relu"),
            k3.layers.GlobalAveragePooling2D(),
            k3.layers.Dense(3),
        ]
    )
    _agree(model, convert.to_keras2(model), (8, 8, 1))


@pytest.mark.parametrize(
    "build",
    [
        lambda: k3.applications.MobileNetV2(
            input_shape=(32, 32, 3), weights=None, classes=4, alpha=0.35, classifier_activation=None
        ),
        lambda: k3.applications.MobileNetV3Small(
            input_shape=(32, 32, 3), weights=None, classes=4, classifier_activation=None
        ),
    ],
    ids=["mobilenetv2", "mobilenetv3small"],
)
def test_keras_applications_mobile_nets_built_in_keras_3_convert(build):
    model = _randomized_batch_norm(build())
    twin = convert.to_keras2(model)
    images, expected = _agree(model, twin, (32, 32, 3), scale=255.0)
    np.testing.assert_allclose(
        np.asarray(convert.to_keras3(twin)(images, training=False)),
        expected,
        atol=TOLERANCE,
        rtol=0,
    )


def test_a_nested_backbone_is_inlined_so_the_twin_quantizes():
    base = k3.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, include_top=False, include_preprocessing=False
    )
    inputs = k3.Input((32, 32, 3))
    outputs = k3.layers.Dense(3)(k3.layers.GlobalAveragePooling2D()(base(inputs)))
    model = k3.Model(inputs, outputs)
    twin = convert.to_keras2(model)
    assert not any(isinstance(layer, keras.Model) for layer in twin.layers)
    _agree(model, twin, (32, 32, 3))
    report = tfkd.quantize.doctor(twin)
    assert report.ok, str(report)


class _Custom(k3.layers.Layer):
    def call(self, x):
        return x * 2.0


class _Subclassed(k3.Model):
    def __init__(self):
        super().__init__()
        self.dense = k3.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize(
    "make, named",
    [
        (lambda i: k3.layers.Lambda(lambda t: t + 1.0, name="shift")(i), r"shift \(Lambda\)"),
        (lambda i: _Custom(name="doubler")(i), r"doubler \(_Custom\)"),
    ],
    ids=["lambda", "custom"],
)
def test_a_layer_without_a_twin_is_refused_by_name_and_class(make, named):
    inputs = k3.Input((4,))
    model = k3.Model(inputs, k3.layers.Dense(2)(make(inputs)))
    with pytest.raises(convert.UnsupportedModelError, match=named):
        convert.to_keras2(model)


def test_a_subclassed_model_is_refused():
    model = _Subclassed()
    model(np.zeros((1, 4), np.float32))
    with pytest.raises(convert.UnsupportedModelError, match="subclassed"):
        convert.to_keras2(model)


def test_a_setting_with_no_tf_keras_meaning_is_refused_not_dropped():
    inputs = k3.Input((4,))
    model = k3.Model(inputs, k3.layers.Dense(2, lora_rank=2)(inputs))
    with pytest.raises(convert.UnsupportedModelError, match="lora_(rank|alpha)=2"):
        convert.to_keras2(model)


def _keras3_student():
    inputs = k3.Input((8, 8, 1))
    x = k3.layers.Conv2D(8, 3, padding="same")(inputs)
    x = k3.layers.ReLU()(k3.layers.BatchNormalization()(x))
    x = k3.layers.GlobalAveragePooling2D()(x)
    return k3.Model(inputs, k3.layers.Dense(10)(x), name="my_student")


def test_the_distiller_and_quantize_student_take_a_keras_3_student():
    splits = tfkd.data.load("digits")
    train = tfkd.data.batches(splits.train, splits.preprocessing, 128).take(2)
    teacher = tfkd.models.build("cnn_small", (8, 8, 1), 10)
    student = _keras3_student()
    distiller = tfkd.Distiller(student, teacher)
    assert isinstance(distiller.student, keras.Model) and distiller.student.name == "my_student"
    images = next(iter(train))[0].numpy()
    np.testing.assert_allclose(
        distiller.student(images).numpy(), np.asarray(student(images)), atol=TOLERANCE
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [w.copy() for w in distiller.student.get_weights()]
    distiller.fit(train, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, distiller.student.get_weights()))
    qat = tfkd.quantize.quantize_student(student)
    assert tfkd.quantize.is_quantization_aware(qat)


def test_tf_keras_names_keras_3_refuses_are_made_valid():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="Conv")(inputs)
    x = keras.layers.BatchNormalization(name="Conv/BatchNorm")(x)  # as in tf_keras MobileNetV3
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    twin = convert.to_keras3(model)
    assert "Conv_BatchNorm" in [layer.name for layer in twin.layers]
    _agree(twin, model, (8, 8, 3))


@pytest.mark.slow
@pytest.mark.parametrize("name", tfkd.models.available())
def test_every_registered_student_has_a_keras_3_twin(name):
    shape = (8, 8, 1) if name.startswith("cnn") else (32, 32, 3)
    model = tfkd.models.build(name, shape, 5)
    twin = convert.to_keras3(model)
    images = np.random.default_rng(2).random((3, *shape)).astype("float32")
    expected = model(images, training=False).numpy()
    # Relative to the logits' scale: a random 110-layer ResNet's reach the hundreds.
    np.testing.assert_allclose(
        np.asarray(twin(images, training=False)),
        expected,
        atol=TOLERANCE * max(1.0, float(np.abs(expected).max())),
        rtol=0,
    )
