"""Pretrained backbones and weight files: `keras.applications` teachers and `--*_weights`.

A `keras_applications:NAME` model is the named `keras.applications` backbone (any resolution,
no top) with a new classification head, as one flat functional graph so that its layers keep the
names of the published weight files. Its input is tfkd's normalised image, like every tfkd
model; a fixed 1x1 convolution in front turns that back into what the backbone was trained on
(0..255 pixels, [-1, 1], ImageNet mean/std, or BGR minus the mean, depending on the family).

Weights come from ImageNet (`weights="imagenet"`: the Keras download, or the file already in
the Keras cache) or from an `.h5` weights file, matched by layer name, so a backbone-only
file fits a model with a new head. A file whose shapes do not match is refused with the layer
named; a file sharing no layer with the model is refused too (it is for another model).
"""

import os
import re
from collections.abc import Sequence

import numpy as np

from tfkd.data import Preprocessing
from tfkd.keras import keras

PREFIX = "keras_applications:"
IMAGENET = "imagenet"
# The layers a frozen-backbone phase trains (and the input adapter, which never trains).
HEAD_LAYERS = ("head_dropout", "logits")
INPUT_ADAPTER = "imagenet_input"
DEFAULT_HEAD_DROPOUT = 0.2

# What each family's `preprocess_input` expects. raw: pixels 0..255 (the model rescales them
# itself); tf: [-1, 1]; torch: [0, 1] minus the ImageNet mean, over its std; caffe: BGR pixels
# minus the ImageNet mean.
_RAW = (
    "ConvNeXtTiny",
    "ConvNeXtSmall",
    "ConvNeXtBase",
    "ConvNeXtLarge",
    "ConvNeXtXLarge",
    *(f"EfficientNetB{i}" for i in range(8)),
    "EfficientNetV2B0",
    "EfficientNetV2B1",
    "EfficientNetV2B2",
    "EfficientNetV2B3",
    "EfficientNetV2S",
    "EfficientNetV2M",
    "EfficientNetV2L",
    "MobileNetV3Small",
    "MobileNetV3Large",
    "RegNetX002",
    "RegNetX004",
    "RegNetX008",
    "RegNetY002",
    "RegNetY004",
    "RegNetY008",
)
_TF = (
    "MobileNet",
    "MobileNetV2",
    "ResNet50V2",
    "ResNet101V2",
    "ResNet152V2",
    "InceptionV3",
    "InceptionResNetV2",
    "Xception",
    "NASNetMobile",
    "NASNetLarge",
)
_CAFFE = ("ResNet50", "ResNet101", "ResNet152", "VGG16", "VGG19")
_TORCH = ("DenseNet121", "DenseNet169", "DenseNet201")
_INPUT_MODES = {
    **{n: "raw" for n in _RAW},
    **{n: "tf" for n in _TF},
    **{n: "caffe" for n in _CAFFE},
    **{n: "torch" for n in _TORCH},
}
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
_IMAGENET_STD = np.array([0.229, 0.224, 0.225])
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])


def available() -> list[str]:
    """The `keras.applications` names tfkd can build (those this Keras has)."""
    return sorted(n for n in _INPUT_MODES if hasattr(keras.applications, n))


def is_application(name: str) -> bool:
    return name.startswith(PREFIX)


def application_name(name: str) -> str:
    """`NAME` of `keras_applications:NAME`, checked."""
    app = name[len(PREFIX) :] if is_application(name) else name
    if app not in available():
        raise ValueError(
            f"'{app}' is not a keras.applications model tfkd knows. Available: "
            f"{', '.join(PREFIX + n for n in available())}"
        )
    return app


def _input_affine(mode: str, preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """(3x3 matrix, bias) taking tfkd's normalised image to what the backbone expects."""
    channels = preprocessing.channels
    if channels != 3:
        raise ValueError(
            f"keras.applications backbones take RGB images; this dataset has {channels} channel(s)."
        )
    std = np.broadcast_to(np.asarray(preprocessing.std, np.float64), (3,))
    mean = np.broadcast_to(np.asarray(preprocessing.mean, np.float64), (3,))
    # raw pixel = (x * std + mean) / scale
    gain, offset = std / preprocessing.scale, mean / preprocessing.scale
    if mode == "tf":
        gain, offset = gain / 127.5, offset / 127.5 - 1.0
    elif mode == "torch":
        gain, offset = (
            gain / 255.0 / _IMAGENET_STD,
            (offset / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD,
        )
    matrix = np.diag(gain)
    if mode == "caffe":
        # Output channel c reads input channel 2 - c: RGB in, BGR out.
        matrix, offset = matrix[:, ::-1], offset[::-1] - _CAFFE_MEAN_BGR
    return matrix, offset


def adapted_input(app: str, inputs, preprocessing: Preprocessing):
    """`inputs` (tfkd-normalised images) as `keras.applications.<app>` expects its pixels,
    through a frozen 1x1 convolution (`INPUT_ADAPTER`) inside the model, so apps feed what
    training fed."""
    matrix, bias = _input_affine(_INPUT_MODES[app], preprocessing)
    adapter = keras.layers.Conv2D(3, 1, name=INPUT_ADAPTER, trainable=False)
    x = adapter(inputs)
    adapter.set_weights([matrix.reshape(1, 1, 3, 3).astype(np.float32), bias.astype(np.float32)])
    return x


def _cache_hint(error: Exception) -> str:
    """Where Keras looks for a weights file it failed to download, and the address."""
    url = re.search(r"(https?://\S+?\.h5)", str(error))
    cache = os.path.join(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")), "models")
    if not url:
        return f"put the weights file Keras downloads in {cache}/"
    return (
        f"download {url.group(1)} on a machine with internet and put it in "
        f"{cache}/{os.path.basename(url.group(1))}"
    )


def backbone(app: str, input_tensor, weights: str | None, label: str, **app_kwargs) -> keras.Model:
    """`keras.applications.<app>` without its top, average-pooled, built on `input_tensor` (so
    its layers join the caller's flat graph); Keras' errors, a failed ImageNet download
    included, become one `ValueError` starting with `label`."""
    constructor = getattr(keras.applications, app)
    try:
        return constructor(
            include_top=False,
            weights=weights,
            input_tensor=input_tensor,
            pooling="avg",
            **app_kwargs,
        )
    except ValueError as error:
        raise ValueError(f"{label}: {str(error).splitlines()[0]}") from error
    except Exception as error:  # noqa: BLE001 (Keras raises a bare Exception on a failed download)
        if "fetch" not in str(error).lower():
            raise
        raise ValueError(
            f"{label}: the ImageNet weights could not be downloaded (no "
            f"network?). Fix: {_cache_hint(error)}; or give an .h5 weights file "
            "instead of imagenet."
        ) from error


def build(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    preprocessing: Preprocessing,
    weights: str | None = None,
    dropout: float = DEFAULT_HEAD_DROPOUT,
) -> keras.Model:
    """`keras_applications:NAME` with a new head, taking tfkd-normalised images.

    Args:
        name: `keras_applications:NAME` (or NAME).
        input_shape: (height, width, 3), any resolution the backbone accepts.
        num_classes: classes of the new head (its logits, no softmax).
        preprocessing: the normalisation of the data the model is fed.
        weights: None (random), "imagenet", or an `.h5` weights file (by layer name).
    """
    app = application_name(name)
    inputs = keras.Input(tuple(input_shape), name="image")
    x = adapted_input(app, inputs, preprocessing)
    features = backbone(
        app, x, IMAGENET if weights == IMAGENET else None, f"keras_applications:{app}"
    )
    x = keras.layers.Dropout(dropout, name=HEAD_LAYERS[0])(features.output)
    logits = keras.layers.Dense(num_classes, name=HEAD_LAYERS[1])(x)
    model = follow_small_data(keras.Model(inputs, logits, name=app.lower()))
    if weights not in (None, IMAGENET):
        load_weights(model, weights, role=f"keras_applications:{app}")
    return model


# keras.applications builds batch normalisation with momentum 0.999 (or 0.997), tuned for
# ImageNet's millions of steps: on a few thousand photos the moving statistics are still near
# their initial values after training, and inference-mode predictions collapse to one class.
# Keras' own default follows the data within about a hundred steps.
SMALL_DATA_BN_MOMENTUM = 0.99


def follow_small_data(model: keras.Model) -> keras.Model:
    """Caps every batch normalisation's momentum at `SMALL_DATA_BN_MOMENTUM`; returns `model`."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = min(layer.momentum, SMALL_DATA_BN_MOMENTUM)
    return model


def backbone_layers(model: keras.Model) -> list:
    """The layers of a `build` model that a frozen-backbone phase freezes."""
    return [
        layer
        for layer in model.layers
        if layer.name not in HEAD_LAYERS and not isinstance(layer, keras.layers.InputLayer)
    ]


def load_weights(model: keras.Model, path: str, role: str = "model") -> int:
    """Loads an `.h5` weights file into `model` by layer name; returns how many layers matched.

    Raises:
        ValueError: the file is missing, not HDF5 weights, shares no layer with the model, or a
            shared layer's shapes differ (the layer and both shapes are named).
    """
    import h5py  # noqa: PLC0415  (a tf_keras dependency)

    if not os.path.isfile(path):
        raise ValueError(
            f"Weights file {path} for the {role} does not exist. Fix: give an .h5 "
            "file written by model.save_weights('....h5'), or imagenet."
        )
    try:
        with h5py.File(path, "r") as handle:
            group = handle.get("model_weights", handle)
            names = _names(group, "layer_names")
            # Shapes from the datasets' headers: the weights themselves are read once, below.
            stored = {
                n: [tuple(group[n][w].shape) for w in _names(group[n], "weight_names")]
                for n in names
            }
    except (OSError, KeyError) as error:
        raise ValueError(
            f"Weights file {path} for the {role} is not an HDF5 weights file "
            f"({type(error).__name__}). Fix: give an .h5 file written by "
            "model.save_weights('....h5')."
        ) from error
    layers = {layer.name: layer for layer in model.layers}
    shared = [n for n in names if n in layers and stored[n]]
    if not shared:
        raise ValueError(
            f"Weights file {path} shares no layer name with the {role} "
            f"'{model.name}' (file: {names[:5]}..., model: "
            f"{[layer.name for layer in model.layers[:5]]}...): it was saved from another "
            "architecture. Fix: give weights saved from this model."
        )
    for name in shared:
        expected = [tuple(w.shape) for w in layers[name].weights]
        if stored[name] != expected:
            raise ValueError(
                f"Weights file {path} does not fit the {role} '{model.name}': "
                f"layer '{name}' has weights of shapes {expected} but the file "
                f"holds {stored[name]}. Fix: give weights "
                "saved from the same architecture, input channels and width."
            )
    model.load_weights(path, by_name=True)
    return len(shared)


def _names(group, attribute: str) -> list[str]:
    """An HDF5 weights file's name list (layer or weight names; bytes in older files)."""
    return [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get(attribute, [])]
