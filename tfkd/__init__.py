"""tfkd: knowledge distillation for TensorFlow/Keras students shipped to mobile.

The public modules are listed in `__all__`; docs/architecture.md says what each owns.
"""

from tfkd import (  # noqa: E402  # noqa: E402  # noqa: E402
    calibration,
    data,
    distribute,
    evaluate,
    export,
    features,
    images,
    keras3,
    losses,
    mixing,
    models,
    pretrained,
    quantize,
    stats,
    teacher_cache,
    teacher_input,
    teachers,  # noqa: E402
    training,  # noqa: E402
)
from tfkd.distiller import Distiller  # noqa: E402
from tfkd.keras import keras  # noqa: F401  (Keras 2 for tfkd, TF-MOT imported without side effects)

__version__ = "0.1.0"

__all__ = [
    "Distiller",
    "calibration",
    "data",
    "distribute",
    "evaluate",
    "export",
    "features",
    "images",
    "keras",
    "keras3",
    "losses",
    "mixing",
    "models",
    "pretrained",
    "quantize",
    "stats",
    "teacher_cache",
    "teacher_input",
    "teachers",
    "training",
]
