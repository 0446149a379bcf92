"""Accuracy of Keras models and `.tflite` files on the same split, and the parity gate."""

import dataclasses
import os
from collections.abc import Iterable, Mapping

import numpy as np
import tensorflow as tf

from tfkd.data.schema import split_inputs
from tfkd.keras import keras

DEFAULT_MAX_DROP_POINTS = 1.0


def correct_predictions(model: keras.Model, batches) -> np.ndarray:
    """Whether `model`'s top-1 class is the label, per example of batched `(inputs, labels)`,
    in order: what paired tests (`tfkd.stats`) compare between two models."""
    hits = [
        np.argmax(model(inputs, training=False), axis=-1) == np.asarray(labels)
        for inputs, labels in batches
    ]
    if not hits:
        raise ValueError("Cannot measure accuracy on an empty dataset.")
    return np.concatenate(hits)


def precise_batch_norm(model: keras.Model, images: Iterable, batches: int = 20) -> keras.Model:
    """A copy of `model` whose batch-normalisation statistics are the plain average over
    `batches` batches of `images` (precise BN, Wu & Johnson 2021, "Rethinking 'Batch' in
    BatchNorm"); `model` itself is left as it is.

    Why: Keras keeps moving averages with momentum 0.99, which after a few hundred steps still
    weigh their initial values (0.99**80 = 45%): a model evaluated early in training predicts
    near chance whatever it has learned. Measuring a race's probes needs the statistics of the
    weights as they are. `images` yields input batches (or `(inputs, ...)` tuples, or dicts
    with an "image" key, as the Distiller's batches are).
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    norms = [m for m in copy.submodules if isinstance(m, keras.layers.BatchNormalization)]
    if not norms:
        return copy
    seen = 0
    for batch in images:
        inputs = batch[0] if isinstance(batch, tuple) else batch
        inputs = split_inputs(inputs)[0]
        for norm in norms:
            # A running mean: batch k weighs 1 / (k + 1), the earlier ones the rest.
            norm.momentum = seen / (seen + 1)
        copy(inputs, training=True)
        seen += 1
        if seen == batches:
            break
    if not seen:
        raise ValueError("`images` is empty: no batch to estimate the statistics from.")
    return copy


def keras_accuracy(model: keras.Model, batches: tf.data.Dataset) -> float:
    """Top-1 accuracy of `model` (logits) over batched `(inputs, labels)`.

    Computed here rather than with `model.evaluate` so it does not depend on how (or whether)
    the model was compiled, and counts every example exactly once.
    """
    correct = total = 0
    for inputs, labels in batches:
        predictions = np.argmax(model(inputs, training=False), axis=-1)
        correct += int(np.sum(predictions == labels.numpy()))
        total += int(labels.shape[0])
    if total == 0:
        raise ValueError("Cannot measure accuracy on an empty dataset.")
    return correct / total


def load_interpreter(model: str | bytes, num_threads: int | None = None, **kwargs):
    """A LiteRT interpreter for a `.tflite` path or flatbuffer, with a clear error if invalid."""
    from ai_edge_litert.interpreter import Interpreter

    where = model if isinstance(model, str) else "the given flatbuffer"
    if isinstance(model, str) and not os.path.exists(model):
        raise FileNotFoundError(f"No .tflite file at {model}.")
    try:
        source = {"model_path": model} if isinstance(model, str) else {"model_content": model}
        interpreter = Interpreter(**source, num_threads=num_threads, **kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise ValueError(
            f"{where} is not a valid .tflite model ({error}). It may be truncated or corrupt; "
            "re-export it."
        ) from error
    return interpreter


class TFLiteClassifier:
    """Runs a `.tflite` classifier on batches of *normalised* float images.

    Quantized (int8/uint8) inputs are quantized with the model's own scale and zero point and
    outputs dequantized, so callers always pass and get float values.
    """

    def __init__(self, model: str | bytes, num_threads: int | None = None, **kwargs):
        self.interpreter = load_interpreter(model, num_threads, **kwargs)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._batch = int(self._input["shape"][0])
        self._resizable = int(self._input["shape_signature"][0]) == -1

    def quantize(self, images: np.ndarray) -> np.ndarray:
        """Normalised float images in the model's input dtype (quantized with its own scale and
        zero point)."""
        dtype = self._input["dtype"]
        if dtype == np.float32:
            return images.astype(np.float32)
        scale, zero_point = self._input["quantization"]
        info = np.iinfo(dtype)
        q = np.round(images / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize(self, outputs: np.ndarray) -> np.ndarray:
        if self._output["dtype"] == np.float32:
            return outputs
        scale, zero_point = self._output["quantization"]
        return (outputs.astype(np.float32) - zero_point) * scale

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
            self.interpreter.allocate_tensors()
            self._batch = batch.shape[0]
        self.interpreter.set_tensor(self._input["index"], self.quantize(batch))
        self.interpreter.invoke()
        return self._dequantize(self.interpreter.get_tensor(self._output["index"]))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Float logits for a batch of normalised images."""
        images = np.asarray(images, np.float32)
        if self._resizable:
            return self._run(images)
        return np.concatenate([self._run(images[i : i + 1]) for i in range(len(images))])


def tflite_accuracy(model: str | bytes, batches: Iterable, num_threads: int | None = None) -> float:
    """Top-1 accuracy of a `.tflite` classifier over batched `(normalised images, labels)`."""
    classifier = TFLiteClassifier(model, num_threads)
    correct = total = 0
    for images, labels in batches:
        predictions = np.argmax(classifier.predict(np.asarray(images)), axis=-1)
        correct += int(np.sum(predictions == np.asarray(labels)))
        total += len(predictions)
    if total == 0:
        raise ValueError("Cannot measure accuracy on an empty dataset.")
    return correct / total


class ParityError(ValueError):
    """A `.tflite` file lost more accuracy than allowed against its Keras model; `drops` holds
    every variant's drop in points, as `parity_gate` returns it when it passes."""

    def __init__(self, message: str, drops: Mapping[str, float]):
        super().__init__(message)
        self.drops = dict(drops)


def parity_gate(
    reference_accuracy: float,
    accuracies: Mapping[str, float],
    max_drop_points: float = DEFAULT_MAX_DROP_POINTS,
    reference_name: str = "Keras student",
) -> dict[str, float]:
    """Drop in accuracy points of each model against the reference; `ParityError` past the limit.

    Args:
        reference_accuracy: accuracy of the float Keras model, in [0, 1].
        accuracies: accuracy of each `.tflite` variant by name, in [0, 1].
        max_drop_points: largest allowed drop, in percentage points.

    Returns:
        The drop of every variant in points (negative when the variant is better).
    """
    if not max_drop_points >= 0:
        raise ValueError(f"`max_drop_points` must be >= 0. Received: {max_drop_points}")
    drops = {name: 100.0 * (reference_accuracy - acc) for name, acc in accuracies.items()}
    failing = {name: drop for name, drop in drops.items() if drop > max_drop_points}
    if failing:
        lines = [
            f"  {name}: {100 * accuracies[name]:.2f}% ({drop:+.2f} points drop)"
            for name, drop in sorted(failing.items())
        ]
        raise ParityError(
            f"{len(failing)} .tflite model(s) lost more than {max_drop_points:.2f} accuracy points "
            f"against the {reference_name} ({100 * reference_accuracy:.2f}%):\n"
            + "\n".join(lines)
            + "\nFix: use quantization-aware distillation instead of PTQ, enlarge the "
            "representative set, or find the damaged layer with tfkd.evaluate.localize_drop.",
            drops,
        )
    return drops


def _channel_relative_error(reference: np.ndarray, quantized: np.ndarray) -> float:
    """Mean over channels (last axis) of `|q - f| / |f|`.

    Per channel because int8 ranges are per tensor: one wide channel can crush all the others
    to a few levels while the tensor-wide error, dominated by that channel, still looks small.
    """
    channels = reference.shape[-1] if reference.ndim else 1
    f = reference.reshape(-1, channels)
    q = quantized.reshape(-1, channels)
    scale = np.linalg.norm(f, axis=0)
    live = scale > 1e-6 * max(scale.max(), 1e-30)
    if not live.any():
        return float(np.linalg.norm(q - f))
    return float(np.mean(np.linalg.norm(q - f, axis=0)[live] / scale[live]))


@dataclasses.dataclass(frozen=True)
class TensorError:
    """How far one tensor of a quantized model is from the float model's, on the same input."""

    tensor: str
    op: str
    relative_error: float
    added_error: float


def localize_drop(
    float_model: str | bytes, quantized_model: str | bytes, images: np.ndarray
) -> list[TensorError]:
    """Compares every intermediate tensor of two conversions of one model on the same input.

    Tensors are matched by name (the converter names them after the Keras layers). The relative
    error `|q - f| / |f|` (averaged over channels) grows along the graph, so the layer that
    damages the model most is the one whose error grows the most: `added_error`, the error
    minus the largest error among its op's inputs. The result is sorted by that, worst first.
    """
    from ai_edge_litert.interpreter import OpResolverType

    options = dict(
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    reference = TFLiteClassifier(float_model, **options)
    quantized = TFLiteClassifier(quantized_model, **options)
    images = np.asarray(images, np.float32)
    reference.predict(images)
    quantized.predict(images)

    def tensors(classifier):
        interpreter = classifier.interpreter
        return {d["name"]: d for d in interpreter.get_tensor_details()}, interpreter

    float_tensors, float_interpreter = tensors(reference)
    quant_tensors, quant_interpreter = tensors(quantized)

    def value(interpreter, detail):
        array = interpreter.get_tensor(detail["index"])
        if detail["dtype"] in (np.int8, np.uint8, np.int32) and detail["quantization"][0]:
            scale, zero_point = detail["quantization"]
            return (array.astype(np.float64) - zero_point) * scale
        return array.astype(np.float64)

    errors_by_index: dict[int, float] = {}
    results = []
    for op in quant_interpreter._get_ops_details():
        input_error = max((errors_by_index.get(i, 0.0) for i in op["inputs"]), default=0.0)
        for index in op["outputs"]:
            name = quant_interpreter._get_tensor_details(index, 0)["name"]
            if name not in float_tensors:
                errors_by_index[index] = input_error
                continue
            f = value(float_interpreter, float_tensors[name])
            q = value(quant_interpreter, quant_tensors[name])
            if f.shape != q.shape:
                continue
            error = _channel_relative_error(f, q)
            errors_by_index[index] = error
            results.append(TensorError(name, op["op_name"], error, error - input_error))
    if not results:
        raise ValueError(
            "The two models share no tensor names; they are not conversions of "
            "the same Keras model."
        )
    return sorted(results, key=lambda r: r.added_error, reverse=True)
