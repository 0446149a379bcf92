"""Keras 3 models in and out of tfkd's Keras 2 (`tf_keras`): trainable twins, layer by layer.

TF-MOT quantizes only tf_keras models, while users, tutorials and `keras.applications` in
TensorFlow 2.21 write Keras 3. `to_keras2` rebuilds a Keras 3 functional or Sequential model of
built-in layers as a tf_keras model with the same weights (so it can be distilled, quantized and
exported); `to_keras3` goes back, so the shipped student can be loaded by an app team's Keras 3
code. Both walk the model's graph node by node and create each layer's twin from its config,
so shared layers, nested models and multi-input layers (Add, Concatenate) keep their wiring.

Where the two Kerases differ, the twin is exact, not approximate:
- Keras 3's `hard_sigmoid` is relu6(x + 3) / 6, tf_keras' is clip(0.2 x + 0.5): it becomes
  `Rescaling(1/6, offset=0.5)` then `ReLU(max_value=1)`; `hard_silu`/`hard_swish` multiply that
  by x; `relu6` is `ReLU(max_value=6)`. All built-in layers, so the twin converts back.
- Settings one Keras has and the other lacks are dropped only at their neutral value (None,
  Keras 3's `synchronized=False`, tf_keras' `groups=1` on DepthwiseConv2D); any other value is
  refused.

A layer without a twin (custom classes, `Lambda`, TF op layers other than tf_keras' `x + c` and
`x * c`) or a subclassed model is refused
with `UnsupportedModelError`, naming the layer and its class, before anything is built.
"""

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfkd import files
from tfkd.keras import keras, keras3
from tfkd.models import keras3_config
from tfkd.models.keras3_config import UnsupportedModelError

# Layers with a twin of the same name and meaning in both Kerases.
SUPPORTED_LAYERS = frozenset(
    {
        "InputLayer",
        "Conv1D",
        "Conv2D",
        "DepthwiseConv2D",
        "SeparableConv2D",
        "Conv2DTranspose",
        "Dense",
        "BatchNormalization",
        "LayerNormalization",
        "Activation",
        "ReLU",
        "Softmax",
        "ELU",
        "Add",
        "Subtract",
        "Multiply",
        "Average",
        "Maximum",
        "Minimum",
        "Concatenate",
        "MaxPooling2D",
        "AveragePooling2D",
        "GlobalAveragePooling2D",
        "GlobalMaxPooling2D",
        "Rescaling",
        "Normalization",
        "Reshape",
        "Flatten",
        "Permute",
        "Dropout",
        "SpatialDropout2D",
        "ZeroPadding2D",
        "Cropping2D",
        "UpSampling2D",
    }
)
# Activations with the same formula under the same name in both Kerases ("silu" is Keras 3's
# name for tf_keras' "swish").
_SAME_ACTIVATIONS = {
    "linear": "linear",
    "relu": "relu",
    "sigmoid": "sigmoid",
    "softmax": "softmax",
    "tanh": "tanh",
    "elu": "elu",
    "selu": "selu",
    "softplus": "softplus",
    "softsign": "softsign",
    "exponential": "exponential",
    "gelu": "gelu",
    "mish": "mish",
    "swish": "swish",
    "silu": "swish",
}
_REBUILT_ACTIVATIONS = ("relu6", "hard_sigmoid", "hard_silu", "hard_swish")


@dataclasses.dataclass(frozen=True)
class _Side:
    """How to read one Keras' functional graph and build into it."""

    layers: Any
    Input: Callable
    Model: Callable
    is_tensor: Callable[[Any], bool]
    node_layer: Callable
    node_arguments: Callable
    activations: dict  # activation name in this Keras -> name or rebuild in the other
    name: Callable[[str], str]  # a layer name as this Keras accepts it


def _keras3_side():
    k3 = keras3()
    return _Side(
        k3.layers,
        k3.Input,
        k3.Model,
        lambda v: isinstance(v, k3.KerasTensor),
        lambda node: node.operation,
        lambda node: (node.arguments.args, node.arguments.kwargs) if node.arguments else ((), {}),
        {**_SAME_ACTIVATIONS, **{name: name for name in _REBUILT_ACTIVATIONS}},
        # tf_keras names such as MobileNetV3's "Conv/BatchNorm" are refused by Keras 3.
        lambda name: name.replace("/", "_"),
    )


def _keras2_side():
    return _Side(
        keras.layers,
        keras.Input,
        keras.Model,
        # is_keras_tensor raises on a number (the 3.0 of `x + 3.0`) instead of saying no.
        lambda v: tf.is_tensor(v) and keras.backend.is_keras_tensor(v),
        lambda node: node.layer,
        lambda node: (node.call_args, node.call_kwargs),
        {name: name for name in set(_SAME_ACTIVATIONS.values())},
        lambda name: name,
    )


def is_keras3_model(obj) -> bool:
    """Whether `obj` is a Keras 3 model (without importing Keras 3 when it is not one)."""
    return (
        type(obj).__module__.split(".")[0] == "keras"
        and hasattr(obj, "get_weights")
        and not isinstance(obj, keras.Model)
    )


def to_keras2(model) -> keras.Model:
    """A trainable tf_keras twin of a Keras 3 functional or Sequential model, same weights.

    Raises:
        UnsupportedModelError: a layer has no tf_keras twin, or the model is subclassed.
    """
    k3 = keras3()
    if not isinstance(model, k3.Model):
        raise TypeError(f"to_keras2 takes a Keras 3 model. Received: {type(model).__name__}")
    return _convert(model, _keras3_side(), _keras2_side())


def to_keras3(model: keras.Model):
    """A Keras 3 twin of a tf_keras functional or Sequential model, same weights."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"to_keras3 takes a tf_keras model. Received: {type(model).__name__}")
    return _convert(model, _keras2_side(), _keras3_side())


def save_keras3(model: keras.Model, path: str) -> None:
    """Writes the Keras 3 twin of tf_keras `model` to `path` (`.keras`), atomically."""
    if not path.endswith(".keras"):
        raise ValueError(f"`path` must end in .keras. Received: path={path}")
    twin = to_keras3(model)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with files.atomic_path(path) as tmp:
        twin.save(tmp)


def unsupported_layers(model) -> list[str]:
    """`name (Class)` of each layer of `model` (either Keras, nested models included) that has
    no twin; a subclassed model is itself listed."""
    found = []
    graph = _graph(model)
    if graph is None:
        return [f"{model.name} ({type(model).__name__}, a subclassed model)"]
    # Keras 3 also lists the operations written as arithmetic on tensors (`x + 3.0`).
    for layer in getattr(graph, "operations", graph.layers):
        if _is_model(layer):
            found += unsupported_layers(layer)
        elif _arithmetic(layer) is None and (
            type(layer).__name__ not in SUPPORTED_LAYERS or _is_keras3_operation(layer)
        ):
            found.append(f"{layer.name} ({type(layer).__name__})")
    return found


# Keras 3 arithmetic operations on tensors, and the layer computing each with two tensors.
_ARITHMETIC = {"Add": "Add", "Multiply": "Multiply", "Subtract": "Subtract"}


def _is_keras3_operation(op) -> bool:
    """A Keras 3 operation that is not a layer (`keras.ops`)."""
    return type(op).__module__.startswith("keras.src.ops.")


# tf_keras records `x + 3.0` as a TFOpLambda layer calling these TensorFlow functions.
_TF_ARITHMETIC = {
    "__operators__.add": "Add",
    "math.add": "Add",
    "math.multiply": "Multiply",
    "math.subtract": "Subtract",
}


def _arithmetic(op):
    """The merge-layer name of a supported arithmetic operation (Keras 3 `keras.ops`, or a
    tf_keras TFOpLambda), or None."""
    if _is_keras3_operation(op) and type(op).__module__ == "keras.src.ops.numpy":
        return _ARITHMETIC.get(type(op).__name__)
    if type(op).__name__ == "TFOpLambda":
        return _TF_ARITHMETIC.get(str(op.get_config().get("function")))
    return None


def _graph(model):
    """The functional graph of `model` (a built Sequential's inner functional), or None."""
    if getattr(model, "_functional", None) is not None:
        return model._functional  # a built Keras 3 Sequential
    if (
        hasattr(model, "_nodes_by_depth")
        and getattr(model, "_is_graph_network", True)
        and getattr(model, "inputs", None)
    ):
        return model
    return None


def _refuse(model) -> None:
    bad = unsupported_layers(model)
    if bad:
        listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UnsupportedModelError(
            f"Model '{model.name}' has layers without an exact twin in the other Keras: "
            f"{listed}. Supported: built-in {', '.join(sorted(SUPPORTED_LAYERS))}. Fix: "
            "rebuild the model as a functional model of those layers."
        )


def _convert(model, source: _Side, target: _Side):
    _refuse(model)
    graph = _graph(model)
    inputs = [
        target.Input(
            shape=tuple(tensor.shape[1:]),
            dtype=getattr(tensor.dtype, "name", tensor.dtype),
            name=target.name(_history_layer(tensor).name),
        )
        for tensor in graph.inputs
    ]
    outputs = _walk(graph, inputs, source, target)
    return target.Model(
        inputs, outputs if len(outputs) > 1 else outputs[0], name=target.name(model.name)
    )


def _walk(graph, inputs: list, source: _Side, target: _Side) -> list:
    """The target's tensors computed from `inputs` as `graph` computes its outputs. A nested
    model is inlined (its layers called on the outer tensors): TF-MOT cannot quantize inside a
    nested model, and a backbone inside a classifier is how most transfer-learning code is
    written."""
    tensors: dict[int, Any] = {id(t): created for t, created in zip(graph.inputs, inputs)}
    twins: dict[int, Callable] = {}
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            layer = source.node_layer(node)
            if type(layer).__name__ == "InputLayer":
                continue
            args, kwargs = source.node_arguments(node)

            def mapped(value):
                return tensors[id(value)] if source.is_tensor(value) else value

            args = tf.nest.map_structure(mapped, tuple(args))
            kwargs = {
                k: tf.nest.map_structure(mapped, v)
                for k, v in kwargs.items()
                if k not in ("training", "mask", "name")
            }
            if _is_model(layer):
                outputs = _walk(_graph(layer), tf.nest.flatten(args), source, target)
            else:
                if id(layer) not in twins:
                    twins[id(layer)] = _twin(layer, source, target)
                outputs = twins[id(layer)](*args, **kwargs)
            for original, created in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
                tensors[id(original)] = created
    return [tensors[id(t)] for t in graph.outputs]


def _is_model(layer) -> bool:
    return hasattr(layer, "layers") and hasattr(layer, "inputs")


def _history_layer(tensor):
    history = tensor._keras_history
    return history.operation if hasattr(history, "operation") else history.layer


def _twin(layer, source: _Side, target: _Side) -> Callable:
    """A callable on the target's tensors that computes what `layer` computes, with its
    weights copied in once the twin is built."""
    name = target.name(layer.name)
    if _arithmetic(layer):
        return _arithmetic_twin(_arithmetic(layer), name, target)
    class_name = type(layer).__name__
    config = keras3_config.config_for(layer, getattr(target.layers, class_name), source)
    config["name"] = name
    rebuilt = config.get("activation") in _REBUILT_ACTIVATIONS
    if class_name == "Activation" and rebuilt:
        return _rebuilt_activation(config["activation"], name, target)
    after = None
    if rebuilt:  # a layer with a built-in activation tf_keras lacks: linear, then the rebuild
        after = _rebuilt_activation(config["activation"], f"{name}_{config['activation']}", target)
        config["activation"] = "linear"
    created = getattr(target.layers, class_name).from_config(config)
    weights = layer.get_weights()

    def call(*args, **kwargs):
        output = created(*args, **kwargs)
        if weights and not getattr(call, "copied", False):
            keras3_config.copy_weights(layer, created, weights)
            call.copied = True
        return after(output) if after else output

    return call


def _arithmetic_twin(kind: str, name: str, target: _Side) -> Callable:
    """`x + c`, `x * c`, `x - c` with a number c as `Rescaling`; two tensors as the layer."""

    def call(a, b):
        if isinstance(b, (int, float)) or isinstance(a, (int, float)):
            tensor, number = (a, float(b)) if not isinstance(a, (int, float)) else (b, float(a))
            if kind == "Subtract" and tensor is b:
                return target.layers.Rescaling(-1.0, offset=number, name=name)(tensor)
            scale, offset = {
                "Add": (1.0, number),
                "Multiply": (number, 0.0),
                "Subtract": (1.0, -number),
            }[kind]
            return target.layers.Rescaling(scale, offset=offset, name=name)(tensor)
        return getattr(target.layers, kind)(name=name)([a, b])

    return call


def _rebuilt_activation(name: str, layer_name: str, target: _Side) -> Callable:
    layers = target.layers

    def hard_sigmoid(x, suffix):
        scaled = layers.Rescaling(1.0 / 6.0, offset=0.5, name=f"{layer_name}_{suffix}_scale")(x)
        return layers.ReLU(max_value=1.0, name=f"{layer_name}_{suffix}_clip")(scaled)

    if name == "relu6":
        return layers.ReLU(max_value=6.0, name=layer_name)
    if name == "hard_sigmoid":
        return lambda x: hard_sigmoid(x, "hard_sigmoid")
    return lambda x: layers.Multiply(name=layer_name)([x, hard_sigmoid(x, "gate")])


__all__ = [
    "SUPPORTED_LAYERS",
    "UnsupportedModelError",
    "is_keras3_model",
    "save_keras3",
    "to_keras2",
    "to_keras3",
    "unsupported_layers",
]
