"""Models: students and teachers by name, `keras.applications` backbones with their pretrained
weights, and the converter that brings Keras 3 models into tfkd's Keras 2."""

from tfkd.models import keras3, keras3_config, pretrained
from tfkd.models.builders import (
    STUDENT_FILE_SUFFIXES,
    available,
    build,
    cifar_resnet,
    cnn_large,
    cnn_small,
    cnn_tiny,
    efficientnet_lite,
    is_model_file,
    load,
    mobilenet_v2,
    register,
    with_imagenet_weights,
)

__all__ = [
    "STUDENT_FILE_SUFFIXES",
    "available",
    "build",
    "cifar_resnet",
    "cnn_large",
    "cnn_small",
    "cnn_tiny",
    "efficientnet_lite",
    "is_model_file",
    "keras3",
    "keras3_config",
    "load",
    "mobilenet_v2",
    "pretrained",
    "register",
    "with_imagenet_weights",
]
