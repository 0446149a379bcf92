"""The feature maps a detector's head reads, at strides 8 and 16: tfkd's own small CNNs, or a
`keras.applications` network (MobileNetV2, EfficientNetB0) that may start from ImageNet weights.

`ssdlite_mobilenet_v2` is the mobile student: MobileNetV2 at width 0.35 with SSDLite's
depthwise-separable head (Sandler et al. 2018), every op integer after QAT. The `ssd_*`
detectors are teachers: wider backbones with a plain convolutional head.
"""

from tfkd.keras import keras
from tfkd.models import pretrained

# Channels of the own CNNs' stages (strides 2, 4, 8, 16).
OWN_WIDTHS = {"detector_small": (8, 16, 32, 48), "detector_large": (16, 32, 64, 128)}
# Name: (keras.applications network, its arguments, its layers at strides 8 and 16, head width,
# separable head).
APPLICATIONS = {
    "ssdlite_mobilenet_v2": (
        "MobileNetV2",
        {"alpha": 0.35},
        ("block_6_expand_relu", "block_13_expand_relu"),
        64,
        True,
    ),
    "ssd_mobilenet_v2": (
        "MobileNetV2",
        {"alpha": 1.0},
        ("block_6_expand_relu", "block_13_expand_relu"),
        128,
        False,
    ),
    "ssd_efficientnet_b0": (
        "EfficientNetB0",
        {},
        ("block4a_expand_activation", "block6a_expand_activation"),
        128,
        False,
    ),
}


def available() -> list[str]:
    return sorted(OWN_WIDTHS) + sorted(APPLICATIONS)


def with_imagenet_weights() -> list[str]:
    return sorted(APPLICATIONS)


def conv(x, filters: int, strides: int, name: str):
    x = keras.layers.Conv2D(filters, 3, strides, "same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x)


def separable(x, filters: int, name: str):
    """SSDLite's block: a 3x3 depthwise and a 1x1 convolution, each normalised, ReLU6."""
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_pw_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_pw_relu")(x)


def features(name: str, inputs, preprocessing, weights: str | None) -> tuple[dict, int, bool]:
    """Detector `name`'s feature maps on `inputs` by stride, its head width and whether its
    head is separable. `weights`: None (random) or "imagenet" for a keras.applications
    backbone (an `.h5` file is loaded into the whole detector by the caller)."""
    if name in OWN_WIDTHS:
        if weights is not None:
            raise ValueError(
                f"{name} is tfkd's own CNN: it has no ImageNet weights. Use one of "
                f"{with_imagenet_weights()}, or give an .h5 weights file."
            )
        x, levels = inputs, {}
        for stage, filters in enumerate(OWN_WIDTHS[name]):
            x = conv(x, filters, 2, f"stage{stage}")
            x = conv(x, filters, 1, f"stage{stage}_b")
            levels[2 ** (stage + 1)] = x
        return levels, OWN_WIDTHS[name][-1], False
    app, arguments, (at_8, at_16), width, is_separable = APPLICATIONS[name]
    network = pretrained.backbone(
        app,
        pretrained.adapted_input(app, inputs, preprocessing),
        weights,
        f"{name} (keras.applications.{app})",
        **arguments,
    )
    levels = {8: network.get_layer(at_8).output, 16: network.get_layer(at_16).output}
    return levels, width, is_separable
