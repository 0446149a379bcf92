"""Registry of teacher and student builders.

Every builder returns a functional tf_keras model emitting logits (no softmax), built only from
layers TF-MOT can quantize: normalisation lives in the input pipeline (`tfkd.data`), never in a
`Rescaling` layer inside the model.
"""

import math
import os
from collections.abc import Callable, Sequence

from tfkd.distill import teachers
from tfkd.keras import keras
from tfkd.keras import keras3 as keras3_package
from tfkd.models import keras3, pretrained
from tfkd.registry import Registry

layers = keras.layers
Builder = Callable[..., keras.Model]

_REGISTRY: Registry[Builder] = Registry("model")
_IMAGENET_BUILDERS: set[str] = set()


def register(name: str) -> Callable[[Builder], Builder]:
    """Registers `builder(input_shape, num_classes, **kwargs)` under `name`."""
    return _REGISTRY.register(name)


def available() -> list[str]:
    """Names of all registered models."""
    return _REGISTRY.names()


def build(
    name: str, input_shape: Sequence[int], num_classes: int, weights: str | None = None, **kwargs
) -> keras.Model:
    """Builds the registered model `name` for images of `input_shape` (H, W, C).

    Args:
        weights: None (random initialisation), "imagenet" (models built on a
            `keras.applications` backbone: `with_imagenet_weights()`), or an `.h5` weights file
            loaded by layer name (`tfkd.models.pretrained.load_weights`).

    Raises:
        ValueError: unknown name (listing the available ones), bad shape or class count,
            ImageNet weights for a model that has none, a weights file that does not fit.
    """
    builder = _REGISTRY.get(name)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ValueError(
            f"`input_shape` must be (height, width, channels) with positive integers. "
            f"Received: input_shape={input_shape}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2. Received: {num_classes!r}")
    if weights == pretrained.IMAGENET:
        if name not in _IMAGENET_BUILDERS:
            raise ValueError(
                f"'{name}' has no ImageNet weights. Models with ImageNet weights: "
                f"{with_imagenet_weights()}; or give an .h5 weights file."
            )
        return builder(input_shape, num_classes, weights=pretrained.IMAGENET, **kwargs)
    model = builder(input_shape, num_classes, **kwargs)
    if weights is not None:
        pretrained.load_weights(model, weights, role=f"model '{name}'")
    return model


def with_imagenet_weights() -> list[str]:
    """Registered models that can start from ImageNet weights (`weights="imagenet"`)."""
    return sorted(_IMAGENET_BUILDERS)


def _conv_bn_relu(x, filters, kernel_size=3, strides=1, name=""):
    x = layers.Conv2D(
        filters, kernel_size, strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _classifier(x, num_classes):
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return layers.Dense(num_classes, name="logits")(x)


def _cnn(input_shape, num_classes, widths, name):
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i, width in enumerate(widths):
        # Halve the resolution after the first block, as long as something is left to halve.
        strides = 2 if i > 0 and x.shape[1] > 2 else 1
        x = _conv_bn_relu(x, width, strides=strides, name=f"block{i}")
    return keras.Model(inputs, _classifier(x, num_classes), name=name)


@register("cnn_tiny")
def cnn_tiny(input_shape, num_classes):
    """Two conv blocks of 8 and 16 filters: a very small student for digits."""
    return _cnn(input_shape, num_classes, (8, 16), "cnn_tiny")


@register("cnn_small")
def cnn_small(input_shape, num_classes):
    """Three conv blocks of 16, 32, 32 filters: a small student for digits."""
    return _cnn(input_shape, num_classes, (16, 32, 32), "cnn_small")


@register("cnn_large")
def cnn_large(input_shape, num_classes):
    """Five conv blocks up to 256 filters: a teacher for digits."""
    return _cnn(input_shape, num_classes, (64, 64, 128, 128, 256), "cnn_large")


def _basic_block(x, filters, strides, name):
    shortcut = x
    y = _conv_bn_relu(x, filters, strides=strides, name=f"{name}_a")
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_b_conv")(y)
    y = layers.BatchNormalization(name=f"{name}_b_bn")(y)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides, use_bias=False, name=f"{name}_proj_conv")(
            shortcut
        )
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def cifar_resnet(input_shape, num_classes, depth: int, widths: Sequence[int], name: str):
    """CIFAR ResNet of He et al. 2016 (as in the CRD/DKD papers): depth = 6n + 2.

    Args:
        depth: total depth; (depth - 2) must be divisible by 6.
        widths: filters of the stem followed by those of the three stages.
    """
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2. Received: depth={depth}")
    blocks_per_stage = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn_relu(inputs, widths[0], name="stem")
    for stage, filters in enumerate(widths[1:]):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, strides, name=f"stage{stage}_block{block}")
    return keras.Model(inputs, _classifier(x, num_classes), name=name)


def _register_resnet(name, depth, widths):
    @register(name)
    def builder(input_shape, num_classes):
        return cifar_resnet(input_shape, num_classes, depth, widths, name)

    builder.__doc__ = f"CIFAR ResNet, depth {depth}, widths {widths}."
    return builder


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register_resnet(f"resnet{_depth}", _depth, (16, 16, 32, 64))
# The "x4" variants of RepDistiller (CRD paper): four times wider, a strong teacher/student pair.
_register_resnet("resnet8x4", 8, (32, 64, 128, 256))
_register_resnet("resnet32x4", 32, (32, 64, 128, 256))


def _make_divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _inverted_residual(x, expansion, filters, strides, name, kernel_size=3):
    in_channels = x.shape[-1]
    y = x
    if expansion != 1:
        y = layers.Conv2D(in_channels * expansion, 1, use_bias=False, name=f"{name}_expand")(y)
        y = layers.BatchNormalization(name=f"{name}_expand_bn")(y)
        y = layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
    y = layers.DepthwiseConv2D(
        kernel_size, strides, padding="same", use_bias=False, name=f"{name}_dw"
    )(y)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if strides == 1 and in_channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


# (expansion, channels, repeats, first stride) of Sandler et al. 2018, Table 2.
_MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


@register("mobilenetv2")
def mobilenet_v2(input_shape, num_classes, alpha: float = 1.0):
    """MobileNetV2 (Sandler et al. 2018) with width multiplier `alpha`.

    For inputs of 64 pixels or less (CIFAR), the stem and the second stage keep stride 1, as
    the CIFAR variants in the CRD/DKD papers do; otherwise the ImageNet strides are used.
    """
    if not alpha > 0:
        raise ValueError(f"`alpha` must be > 0. Received: alpha={alpha}")
    small_input = min(input_shape[:2]) <= 64
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(
        _make_divisible(32 * alpha),
        3,
        1 if small_input else 2,
        padding="same",
        use_bias=False,
        name="stem_conv",
    )(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    for stage, (expansion, channels, repeats, stride) in enumerate(_MOBILENET_V2_STAGES):
        if small_input and stage == 1:
            stride = 1
        for i in range(repeats):
            x = _inverted_residual(
                x,
                expansion,
                _make_divisible(channels * alpha),
                stride if i == 0 else 1,
                name=f"stage{stage}_block{i}",
            )
    head = _make_divisible(1280 * max(alpha, 1.0))
    x = layers.Conv2D(head, 1, use_bias=False, name="head_conv")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    name = "mobilenetv2" if alpha == 1.0 else f"mobilenetv2_{alpha:g}"
    return keras.Model(inputs, _classifier(x, num_classes), name=name)


def _application_student(
    app: str, input_shape, num_classes, name: str, weights: str | None = None, **app_kwargs
) -> keras.Model:
    """A `keras.applications` backbone (no top, no preprocessing layer) with a new head, as one
    flat graph: the layers keep the published names, so ImageNet weights load."""
    inputs = keras.Input(input_shape, name="image")
    backbone = pretrained.backbone(app, inputs, weights, name, **app_kwargs)
    x = layers.Dropout(pretrained.DEFAULT_HEAD_DROPOUT, name="head_dropout")(backbone.output)
    return pretrained.follow_small_data(
        keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name=name)
    )


def _register_application_student(name: str, app: str, doc: str, **app_kwargs):
    @register(name)
    def builder(input_shape, num_classes, weights=None):
        return _application_student(app, input_shape, num_classes, name, weights, **app_kwargs)

    builder.__doc__ = doc
    _IMAGENET_BUILDERS.add(name)
    return builder


# MobileNetV3 (Howard et al. 2019). The minimalistic variants drop hard-swish, squeeze-excite
# and 5x5 kernels: every op has an int8 kernel and QAT covers them all, which is why they
# quantize best. The full variants keep hard-swish (its raw TF ops stay float during QAT).
for _size in ("small", "large"):
    for _minimalistic in (False, True):
        _register_application_student(
            f"mobilenet_v3_{_size}" + ("_minimalistic" if _minimalistic else ""),
            f"MobileNetV3{_size.title()}",
            f"MobileNetV3-{_size.title()}{' (minimalistic)' if _minimalistic else ''}, "
            "keras.applications backbone; ImageNet weights available.",
            minimalistic=_minimalistic,
            include_preprocessing=False,
        )
# MobileNetV2 at the published widths (the ImageNet strides; see `mobilenetv2` for CIFAR).
for _alpha in (0.35, 0.5, 0.75, 1.0):
    _register_application_student(
        f"mobilenet_v2_{_alpha:g}",
        "MobileNetV2",
        f"MobileNetV2, width {_alpha:g}, keras.applications backbone; ImageNet weights available.",
        alpha=_alpha,
    )


# EfficientNet-B0's blocks (Tan & Le 2019): (expansion, kernel, channels, repeats, stride).
_EFFICIENTNET_B0_BLOCKS = (
    (1, 3, 16, 1, 1),
    (6, 3, 24, 2, 2),
    (6, 5, 40, 2, 2),
    (6, 3, 80, 3, 2),
    (6, 5, 112, 3, 1),
    (6, 5, 192, 4, 2),
    (6, 3, 320, 1, 1),
)


def efficientnet_lite(input_shape, num_classes, width: float, depth: float, name: str):
    """EfficientNet-Lite (TensorFlow's mobile EfficientNet): EfficientNet's MBConv blocks
    without squeeze-excite, with ReLU6 instead of swish, and with the stem and head kept fixed
    when scaling: changes made for integer quantization, so every layer has a QAT rule."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(32, 3, 2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    last = len(_EFFICIENTNET_B0_BLOCKS) - 1
    for stage, (expansion, kernel, channels, repeats, stride) in enumerate(_EFFICIENTNET_B0_BLOCKS):
        # Lite keeps the first and last stages' depth when scaling.
        repeats = repeats if stage in (0, last) else int(math.ceil(repeats * depth))
        for i in range(repeats):
            x = _inverted_residual(
                x,
                expansion,
                _make_divisible(channels * width),
                stride if i == 0 else 1,
                name=f"stage{stage}_block{i}",
                kernel_size=kernel,
            )
    x = layers.Conv2D(1280, 1, use_bias=False, name="head_conv")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    return keras.Model(inputs, _classifier(x, num_classes), name=name)


# (width, depth) of EfficientNet-Lite0..2.
for _index, (_lite_width, _lite_depth) in enumerate(((1.0, 1.0), (1.0, 1.1), (1.1, 1.2))):

    def _lite(
        input_shape, num_classes, _lite_width=_lite_width, _lite_depth=_lite_depth, _index=_index
    ):
        return efficientnet_lite(
            input_shape, num_classes, _lite_width, _lite_depth, f"efficientnet_lite{_index}"
        )

    _lite.__doc__ = f"EfficientNet-Lite{_index}: width {_lite_width}, depth {_lite_depth}."
    register(f"efficientnet_lite{_index}")(_lite)


STUDENT_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")


def is_model_file(name: str) -> bool:
    """Whether a `--student`-style name is a file or directory rather than a registry key."""
    return name.endswith(STUDENT_FILE_SUFFIXES) or os.path.sep in name or os.path.isdir(name)


def load(path: str) -> keras.Model:
    """A trainable tf_keras student from a file: a `.keras` file (tf_keras, or Keras 3 rebuilt
    by `tfkd.models.keras3.to_keras2`), an `.h5`, or a SavedModel directory that Keras saved. Loaded
    with the teachers' safety rules: safe mode, no custom objects, no `.h5` Lambda."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Student {path} does not exist.")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "keras_metadata.pb")):
            raise ValueError(
                f"Student {path} is a directory without keras_metadata.pb: not a "
                "SavedModel that Keras saved, so it has no layers to train. Save "
                "the model with model.save('student.keras') instead."
            )
        model = keras.models.load_model(path, compile=False)
    elif path.endswith(".keras"):
        teachers.refuse_custom_objects(path, role="student")
        if teachers.keras_file_version(path).startswith("3."):
            model = keras3.to_keras2(
                keras3_package().saving.load_model(path, compile=False, safe_mode=True)
            )
        else:
            model = keras.models.load_model(path, compile=False, safe_mode=True)
    elif path.endswith((".h5", ".hdf5")):
        teachers.refuse_h5_lambda(path)
        model = keras.models.load_model(path, compile=False)
    else:
        raise ValueError(
            f"Student {path}: unknown format. Give a .keras or .h5 file or a SavedModel directory."
        )
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise ValueError(
            f"Student {path} is not a functional or Sequential Keras model; tfkd "
            "quantizes and exports only those."
        )
    return model
