"""tfkd: knowledge distillation for TensorFlow/Keras students shipped to mobile."""

from tfkd.keras import keras  # noqa: F401  (selects Keras 2 before anything else imports it)
from tfkd import data, distribute, features, losses, models  # noqa: E402
from tfkd import android_assets, teacher_cache, teachers  # noqa: E402
from tfkd.distiller import Distiller  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Distiller", "android_assets", "data", "distribute", "features", "keras", "losses",
           "models", "teacher_cache", "teachers"]
