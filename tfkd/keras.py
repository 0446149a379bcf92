"""The one place tfkd selects its Keras: Keras 2 (`tf_keras`).

TF-MOT 0.8.1 only quantizes `tf_keras` models, so every tfkd module imports Keras from here:

    from tfkd.keras import keras

`TF_USE_LEGACY_KERAS=1` makes a later `tf.keras` resolve to the same `tf_keras` module, which is
what TF-MOT's own compat layer expects. If TensorFlow was imported and `tf.keras` already
resolved to Keras 3 before this module, that does not matter to tfkd: we never go through
`tf.keras`, and TF-MOT picks `tf_keras` itself when it sees Keras 3 there.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import tf_keras as keras  # noqa: E402  (the environment variable must be set first)

if not keras.__version__.startswith("2."):
    raise ImportError(
        f"tfkd needs Keras 2 from the `tf_keras` package; found version {keras.__version__}. "
        "Fix: pip install 'tf-keras==2.21.*'."
    )



def keras3():
    """The Keras 3 package, for the explicit Keras 3 teacher adapter (`tfkd.teachers`) only.

    Imported on demand and from here, so that this stays the one module where tfkd picks a
    Keras; Keras 3 objects never become layers of a tf_keras model.
    """
    import keras as keras_3  # noqa: PLC0415

    if not keras_3.__version__.startswith("3."):
        raise ImportError(f"Expected Keras 3 for a Keras 3 teacher; found {keras_3.__version__}.")
    return keras_3


__all__ = ["keras", "keras3"]
