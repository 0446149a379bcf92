"""The parity gate: a `.tflite` file may lose at most a set number of accuracy points against
its Keras model, and when one loses more, the tensors where the drop starts."""

import dataclasses
from collections.abc import Mapping

import numpy as np

from tfkd.measure.runtime import TFLiteClassifier

DEFAULT_MAX_DROP_POINTS = 1.0


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
    metric: str = "accuracy",
) -> dict[str, float]:
    """Drop in accuracy points of each model against the reference; `ParityError` past the limit.

    Args:
        reference_accuracy: accuracy of the float Keras model, in [0, 1].
        accuracies: accuracy of each `.tflite` variant by name, in [0, 1].
        max_drop_points: largest allowed drop, in percentage points.
        metric: what the scores are, as the error names their points (a detector's "mAP").

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
            f"{len(failing)} .tflite model(s) lost more than {max_drop_points:.2f} {metric} points "
            f"against the {reference_name} ({100 * reference_accuracy:.2f}%):\n"
            + "\n".join(lines)
            + "\nFix: a post-training file recovers with quantization-aware distillation and a "
            "larger representative set; a quantization-aware one with more or gentler "
            "fine-tuning; tfkd.measure.parity.localize_drop finds the damaged layer.",
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
