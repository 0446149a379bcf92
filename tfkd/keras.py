"""The one place tfkd selects its Keras: Keras 2 (`tf_keras`), without changing anybody else's.

TF-MOT 0.8.1 only quantizes `tf_keras` models, so every tfkd module imports Keras from here:

    from tfkd.keras import keras

Importing tfkd leaves `tf.keras` and `import keras` as the user's environment makes them (Keras 3
unless they set `TF_USE_LEGACY_KERAS=1` themselves). TensorFlow resolves `tf.keras` once, on
first use, from `TF_USE_LEGACY_KERAS`; TF-MOT's compat module sets that variable for the whole
process and then reads `tf.keras`, and would so flip a notebook's later `tf.keras` to Keras 2.
So `tf.keras` is resolved here first, under the user's own environment, TF-MOT is imported, and
the variable is put back as it was. TF-MOT then sees Keras 3 in `tf.keras` and picks `tf_keras`
itself, which is what tfkd trains with.
"""

import contextlib
import os

import tensorflow as tf
import tf_keras as keras

if not keras.__version__.startswith("2."):
    raise ImportError(
        f"tfkd needs Keras 2 from the `tf_keras` package; found version {keras.__version__}. "
        "Fix: pip install 'tf-keras==2.21.*'."
    )

LEGACY_KERAS_VARIABLE = "TF_USE_LEGACY_KERAS"


@contextlib.contextmanager
def _environment_kept(name: str):
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


# Resolving the lazy `tf.keras` module pins it for the process (see the module docstring).
getattr(tf.keras, "version", None)
with _environment_kept(LEGACY_KERAS_VARIABLE):
    import tensorflow_model_optimization as tfmot  # noqa: E402


def keras3():
    """The Keras 3 package, for the explicit converters (`tfkd.models.keras3`,
    `tfkd.distill.teachers`) only.

    Imported on demand and from here, so that this stays the one module where tfkd picks a
    Keras.
    """
    import keras as keras_3  # noqa: PLC0415

    if not keras_3.__version__.startswith("3."):
        raise ImportError(f"Expected Keras 3 for a Keras 3 model; found {keras_3.__version__}.")
    return keras_3


__all__ = ["keras", "keras3", "tfmot"]
