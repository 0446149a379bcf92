"""tfkd: knowledge distillation for TensorFlow/Keras students shipped to mobile.

The library follows the flow, one subpackage per step: `data` → `models` → `distill` →
`quantize` → `export` → `measure`, with `tasks` holding what is specific to classification.
`keras`, `registry`, `files` and `progress` (what a person sees inside long work) sit at the
top. `__all__` is the public API; `tools/`,
`pipelines/` and `benchmarks/` use these names and nothing else (docs/architecture.md).
"""

from tfkd import (
    data,
    distill,
    export,
    files,
    measure,
    models,
    progress,
    quantize,
    registry,
    tasks,
)
from tfkd.distill import losses  # the documented `tfkd.losses.KD(...)`
from tfkd.distill.distiller import Distiller
from tfkd.keras import keras  # Keras 2 for tfkd; TF-MOT imported without side effects

__version__ = "0.1.0"

__all__ = [
    "Distiller",
    "data",
    "distill",
    "export",
    "files",
    "keras",
    "losses",
    "measure",
    "models",
    "progress",
    "quantize",
    "registry",
    "tasks",
]
