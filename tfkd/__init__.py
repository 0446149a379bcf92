"""tfkd: knowledge distillation for TensorFlow/Keras students shipped to mobile.

The public modules are listed in `__all__`; docs/architecture.md says what each owns. `tools/`,
`pipelines/` and `benchmarks/` use these and nothing else of the library.
"""

from tfkd import (
    benchmark,
    calibration,
    data,
    device,
    distiller,
    distribute,
    evaluate,
    export,
    features,
    files,
    images,
    keras3,
    losses,
    metadata,
    mixing,
    models,
    pretrained,
    quantize,
    stats,
    teacher_cache,
    teacher_input,
    teachers,
    tflite_info,
    training,
)
from tfkd.distiller import Distiller
from tfkd.keras import keras  # Keras 2 for tfkd; TF-MOT imported without side effects

__version__ = "0.1.0"

__all__ = [
    "Distiller",
    "benchmark",
    "calibration",
    "data",
    "device",
    "distiller",
    "distribute",
    "evaluate",
    "export",
    "features",
    "files",
    "images",
    "keras",
    "keras3",
    "losses",
    "metadata",
    "mixing",
    "models",
    "pretrained",
    "quantize",
    "stats",
    "teacher_cache",
    "teacher_input",
    "teachers",
    "tflite_info",
    "training",
]
