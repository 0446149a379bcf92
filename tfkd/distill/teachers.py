"""Teachers from anywhere behind one call: `teachers.load(source)`.

A source is a tf_keras model, a `.keras` file (tf_keras or Keras 3, told apart by the file's own
metadata), a legacy `.h5` file, a SavedModel directory, a Keras 3 model object, or a `.tflite`
file. Everything except `.tflite` becomes a frozen tf_keras model that takes normalised images
and returns logits, so the Distiller calls it inside its training step like any teacher. A
`.tflite` teacher runs on the host through LiteRT and can only teach through the teacher-output
cache (`tfkd.distill.teacher_cache`). Lists of sources are ensembles.

Untrusted files: `.keras` loads with safe mode on, and an `.h5` whose config holds a `Lambda`
layer is refused, because tf_keras deserialises HDF5 lambdas (marshalled Python bytecode) even
with safe mode on.
"""

import hashlib
import json
import math
import os
import zipfile
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import tensorflow as tf

from tfkd import files
from tfkd.keras import keras
from tfkd.keras import keras3 as keras3_module
from tfkd.measure.runtime import TFLiteClassifier
from tfkd.models.keras3 import is_keras3_model


class TFLiteTeacher:
    """A `.tflite` teacher: LiteRT on the host, numpy in and out. Use it through the cache."""

    def __init__(self, path: str, num_threads: int | None = None):
        self.path = path
        self.name = os.path.splitext(os.path.basename(path))[0]
        self._classifier = TFLiteClassifier(path, num_threads)
        details = self._classifier.interpreter.get_input_details()[0]
        self.input_shape = tuple(int(d) for d in details["shape"][1:])
        output = self._classifier.interpreter.get_output_details()[0]
        self.num_classes = int(output["shape"][-1])

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Float logits for a batch of normalised images (quantized I/O handled)."""
        return self._classifier.predict(np.asarray(images, np.float32))


Teacher: TypeAlias = keras.Model | TFLiteTeacher


class _FrozenCall(keras.layers.Layer):
    """A tf_keras layer around a foreign callable (SavedModel signature, Keras 3 model).

    The callable is kept outside tf_keras' attribute tracking (its variables belong to another
    framework's object graph and must not be saved or trained by tf_keras).
    """

    def __init__(self, function, num_classes: int, fingerprint: str, owner, **kwargs):
        super().__init__(trainable=False, **kwargs)
        # object.__setattr__ bypasses tf_keras tracking; `owner` keeps the foreign variables alive.
        object.__setattr__(self, "_foreign", (function, owner))
        self._num_classes = num_classes
        self.fingerprint = fingerprint

    def call(self, images):
        return tf.cast(self._foreign[0](images), tf.float32)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self._num_classes])


def _wrap(
    function, input_shape, num_classes: int, name: str, fingerprint: str, owner
) -> keras.Model:
    inputs = keras.Input(tuple(input_shape), name="image")
    layer = _FrozenCall(function, num_classes, fingerprint, owner, name="frozen_call")
    model = keras.Model(inputs, layer(inputs), name=name)
    model.trainable = False
    return model


def from_keras3(model, name: str | None = None) -> keras.Model:
    """The explicit adapter for a Keras 3 model: a frozen tf_keras model calling it.

    The student stays tf_keras; the Keras 3 model is only ever called (inference mode) and its
    weights are never trained, saved or mixed into the tf_keras graph as layers.
    """
    keras3 = keras3_module()
    if not isinstance(model, keras3.Model):
        raise TypeError(f"from_keras3 takes a Keras 3 model; got {type(model).__name__}.")
    if keras3.backend.backend() != "tensorflow":
        raise ValueError(
            f"The Keras 3 teacher uses the '{keras3.backend.backend()}' backend; "
            "tfkd calls it inside a TensorFlow graph. Set KERAS_BACKEND=tensorflow."
        )
    input_shape = tuple(model.inputs[0].shape[1:])
    num_classes = int(model.outputs[0].shape[-1])
    fingerprint_ = _weights_digest(
        "keras3" + json.dumps(model.get_config(), sort_keys=True, default=str), model.get_weights()
    )

    @tf.autograph.experimental.do_not_convert
    def call(images):
        return model(images, training=False)

    return _wrap(
        call, input_shape, num_classes, name or f"{model.name}_keras3", fingerprint_, model
    )


def from_saved_model(
    path: str, signature: str = "serving_default", output: str | None = None
) -> keras.Model:
    """A frozen tf_keras model calling a SavedModel's serving signature.

    Args:
        path: SavedModel directory (with `saved_model.pb`).
        signature: the signature to call.
        output: the output key when the signature has several outputs.
    """
    loaded = tf.saved_model.load(path)
    if signature not in loaded.signatures:
        raise ValueError(
            f"SavedModel {path} has no signature '{signature}'. Its signatures: "
            f"{sorted(loaded.signatures)}"
        )
    function = loaded.signatures[signature]
    inputs = function.structured_input_signature[1]
    if len(inputs) != 1:
        raise ValueError(
            f"SavedModel {path} signature '{signature}' takes {sorted(inputs)}; a "
            "teacher takes exactly one image tensor."
        )
    ((input_name, spec),) = inputs.items()
    outputs = function.structured_outputs
    if output is None:
        if len(outputs) != 1:
            raise ValueError(
                f"SavedModel {path} signature '{signature}' has outputs "
                f"{sorted(outputs)}; pass output=<the logits key>."
            )
        output = next(iter(outputs))
    elif output not in outputs:
        raise ValueError(
            f"SavedModel {path} has no output '{output}'. Its outputs: {sorted(outputs)}"
        )
    num_classes = int(outputs[output].shape[-1])

    @tf.autograph.experimental.do_not_convert
    def call(images):
        return function(**{input_name: tf.cast(images, spec.dtype)})[output]

    digest = hashlib.sha256(f"saved_model:{signature}:{output}".encode())
    files.hash_path(digest, path)
    return _wrap(
        call,
        spec.shape[1:],
        num_classes,
        os.path.basename(os.path.normpath(path)) or "saved_model",
        digest.hexdigest(),
        loaded,
    )


def keras_file_version(path: str) -> str:
    with zipfile.ZipFile(path) as archive:
        if "metadata.json" not in archive.namelist():
            return ""
        return json.loads(archive.read("metadata.json")).get("keras_version", "")


def refuse_h5_lambda(path: str) -> None:
    import h5py  # noqa: PLC0415  (a tf_keras dependency; only needed for .h5)

    with h5py.File(path, "r") as handle:
        config = handle.attrs.get("model_config")
    if config is None:
        raise ValueError(
            f"{path} holds weights only (no model config). Build the model in code "
            "and call load_weights, then pass the model."
        )
    if isinstance(config, bytes):
        config = config.decode("utf-8")
    if '"class_name": "Lambda"' in config:
        raise ValueError(
            f"{path} contains a Lambda layer. Loading it would run Python bytecode stored in the "
            "file, which tfkd refuses for untrusted models. Fix: rebuild the model in code and "
            "load only its weights, or re-save it as .keras without the Lambda."
        )


_BUILT_IN_MODULES = ("keras", "tf_keras")


def _custom_classes(config) -> list[str]:
    """Class names in a `.keras` config that come from outside Keras: safe mode cannot rebuild
    them without running the file owner's code."""
    found = []
    if isinstance(config, dict):
        module = config.get("module")
        registered = config.get("registered_name") or ""
        if "class_name" in config and (
            (module and str(module).split(".")[0] not in _BUILT_IN_MODULES)
            or ">" in str(registered)
        ):
            found.append(str(registered or config["class_name"]))
        for value in config.values():
            found += _custom_classes(value)
    elif isinstance(config, list):
        for value in config:
            found += _custom_classes(value)
    return found


def refuse_custom_objects(path: str, role: str = "teacher") -> None:
    """Refuses a `.keras` file holding classes from outside Keras (safe mode cannot rebuild
    them without running the file owner's code); `role` names the model in the message."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    custom = sorted(set(_custom_classes(config)))
    if custom:
        fix = (
            "export it as a SavedModel directory and pass that"
            if role == "teacher"
            else "rebuild it from built-in layers"
        )
        raise ValueError(
            f"{role.capitalize()} {path} cannot be loaded: it holds custom objects {custom}, and "
            f"{role}s are loaded in safe mode without custom code. Save it with built-in "
            f"layers, or {fix}."
        )


def _load_file(path: str) -> Teacher:
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Teacher {path} does not exist. Give a .keras/.h5/.tflite file "
            "or a SavedModel directory."
        )
    try:
        return _load_existing_file(path)
    except (
        zipfile.BadZipFile,
        OSError,
        KeyError,
        TypeError,
        ValueError,
        EOFError,
        json.JSONDecodeError,
        tf.errors.OpError,
    ) as error:
        raise ValueError(_unloadable(path, error)) from error


def _unloadable(path: str, error: Exception) -> str:
    """One line saying why the teacher file `path` cannot be loaded, and what to do."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if text.startswith(f"Teacher {path}"):  # tfkd's own message about this file
        return text
    if isinstance(error, zipfile.BadZipFile):
        reason = (
            "it is not a zip archive, so not a .keras file: it may be truncated, empty or "
            "something else saved under that name. Re-save or re-download it."
        )
    elif "Lambda" in text:
        reason = (
            "it holds a Lambda layer, which safe mode refuses because loading it would "
            "run code from the file. Rebuild the model without Lambda layers, or export it "
            "as a SavedModel directory."
        )
    elif "locate" in text or "Unknown" in text or "custom" in text.lower():
        reason = (
            f"it holds a custom layer or object tfkd cannot rebuild ({text[:160]}); "
            "teachers are loaded in safe mode without custom code. Save it with built-in "
            "layers, or export it as a SavedModel directory and pass that."
        )
    else:
        reason = (
            f"{type(error).__name__}: {text[:200]}. It may be truncated or corrupt: "
            "re-save or re-download it."
        )
    return f"Teacher {path} cannot be loaded: {reason}"


def _load_existing_file(path: str) -> Teacher:
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(f"{path} is a directory without saved_model.pb: not a SavedModel.")
        return from_saved_model(path)
    if path.endswith(".tflite"):
        return TFLiteTeacher(path)
    if path.endswith(".keras"):
        refuse_custom_objects(path)
        if keras_file_version(path).startswith("3."):
            keras3 = keras3_module()
            return from_keras3(keras3.saving.load_model(path, compile=False, safe_mode=True))
        return keras.models.load_model(path, compile=False, safe_mode=True)
    if path.endswith((".h5", ".hdf5")):
        refuse_h5_lambda(path)
        return keras.models.load_model(path, compile=False)
    raise ValueError(
        f"Teacher {path}: unknown format. Give a .keras, .h5, .tflite file or a "
        "SavedModel directory."
    )


def load(source) -> Teacher:
    """One teacher from a tf_keras model, a Keras 3 model, or a file/directory path."""
    if isinstance(source, (keras.Model, TFLiteTeacher)):
        return source
    if isinstance(source, (str, os.PathLike)):
        return _load_file(os.fspath(source))
    if is_keras3_model(source):
        return from_keras3(source)
    raise TypeError(
        f"Cannot use a {type(source).__name__} as a teacher. Give a tf_keras model, "
        "a Keras 3 model, or a path to a .keras/.h5/.tflite file or SavedModel."
    )


def load_all(source) -> list[Teacher]:
    """`load` for one source or a list of them (an ensemble)."""
    sources = list(source) if isinstance(source, (list, tuple)) else [source]
    if not sources:
        raise ValueError("An ensemble needs at least one teacher.")
    return [load(s) for s in sources]


def _frozen_calls(teacher: Teacher) -> list[_FrozenCall]:
    if not isinstance(teacher, keras.Model):
        return []
    # A teacher behind an input adapter (tfkd.distill.teacher_input) holds the wrapped model inside.
    return [
        found
        for layer in teacher.layers
        for found in ([layer] if isinstance(layer, _FrozenCall) else _frozen_calls(layer))
    ]


def is_foreign(teacher: Teacher) -> bool:
    """Whether `teacher` wraps a SavedModel or Keras 3 model (it cannot be saved as tf_keras)."""
    return bool(_frozen_calls(teacher))


def num_classes(teacher: Teacher) -> int:
    if isinstance(teacher, TFLiteTeacher):
        return teacher.num_classes
    return int(teacher.outputs[0].shape[-1])


def predict(teacher: Teacher, images: np.ndarray) -> np.ndarray:
    """Float32 logits of one teacher for a batch of normalised images."""
    if isinstance(teacher, TFLiteTeacher):
        return teacher.predict(images)
    return np.asarray(teacher(tf.convert_to_tensor(images), training=False), np.float32)


def normalized_weights(
    weights: Sequence[float] | None, num_teachers: int
) -> tuple[float, ...] | None:
    """Ensemble weights checked (one per member, finite, >= 0, not all zero) and summing to 1;
    None (a plain mean) stays None."""
    if weights is None:
        return None
    weights = [float(w) for w in weights]
    if len(weights) != num_teachers:
        raise ValueError(
            f"`teacher_weights` needs one weight per teacher: {num_teachers} teacher(s), "
            f"{len(weights)} weight(s). Received: teacher_weights={weights}"
        )
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            "`teacher_weights` must be finite, >= 0 and not all zero. "
            f"Received: teacher_weights={weights}"
        )
    total = sum(weights)
    return tuple(w / total for w in weights)


def ensemble_predict(
    teachers: Sequence[Teacher], images: np.ndarray, weights: Sequence[float] | None = None
) -> np.ndarray:
    """Members' logits averaged (weighted by `weights`, see `normalized_weights`), as the
    Distiller averages them."""
    outputs = [predict(t, images) for t in teachers]
    weights = normalized_weights(weights, len(teachers))
    if weights is None:
        return np.mean(outputs, axis=0)
    return np.tensordot(np.asarray(weights), np.stack(outputs), axes=1).astype(np.float32)


def fingerprint(teacher: Teacher) -> str:
    """sha256 of what determines the teacher's outputs: architecture and weights (or the file)."""
    digest = hashlib.sha256()
    if isinstance(teacher, TFLiteTeacher):
        files.hash_path(digest, teacher.path)
        return digest.hexdigest()
    frozen = _frozen_calls(teacher)
    if frozen:
        # A foreign model's variables are not tf_keras weights: its wrapper hashed them. The
        # tf_keras weights left are an input adapter's.
        digest.update("".join(layer.fingerprint for layer in frozen).encode())
        return _weights_digest(digest.hexdigest(), teacher.get_weights())
    return _weights_digest(teacher.to_json(), teacher.get_weights())


def _weights_digest(architecture: str, weights) -> str:
    digest = hashlib.sha256(architecture.encode())
    for array in weights:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
