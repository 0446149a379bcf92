"""Distillation: the `Distiller`, logit and feature losses, teachers from anywhere (files,
ensembles, `.tflite`), the teacher cache, the teacher's own input, the training recipes, the
device strategy, and the race that calibrates the loss (`calibration`)."""

from tfkd.distill import (
    calibration,
    distiller,
    distribute,
    features,
    losses,
    teacher_cache,
    teacher_input,
    teachers,
    training,
)
from tfkd.distill.distiller import Distiller

__all__ = [
    "Distiller",
    "calibration",
    "distiller",
    "distribute",
    "features",
    "losses",
    "teacher_cache",
    "teacher_input",
    "teachers",
    "training",
]
