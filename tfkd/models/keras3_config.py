"""A layer's settings and weights carried from one Keras to the other (tfkd.models.keras3):
the config made plain, keys the target does not take dropped only at their neutral value,
weights copied."""

import inspect

import numpy as np


class UnsupportedModelError(ValueError):
    """A model or layer that has no exact twin in the other Keras."""


# Settings dropped when the other Keras has no such argument, at the value that means "off"
# (None always does: an unset regularizer, constraint, LoRA rank or seed).
_NEUTRAL = {
    "synchronized": False,
    "groups": 1,
    "renorm": False,
    "renorm_momentum": 0.99,
    "rms_scaling": False,
}


_BASE_ARGUMENTS = ("name", "trainable", "dtype")


def copy_weights(layer, created, weights) -> None:
    expected = [tuple(w.shape) for w in created.get_weights()]
    found = [tuple(np.shape(w)) for w in weights]
    if expected != found:
        raise UnsupportedModelError(
            f"Layer {layer.name} ({type(layer).__name__}): its weights {found} do not fit the "
            f"twin's {expected}."
        )
    created.set_weights(weights)
    if hasattr(created, "finalize_state"):
        # An adapted Normalization computes from values derived from its variables at the end
        # of `adapt`; weights set afterwards need the same step.
        created.finalize_state()


def _plain(value):
    """A config value without Keras 3's serialisation wrappers: dtype policies become their
    name, objects `{class_name, config}` as both Kerases deserialise them."""
    if isinstance(value, dict):
        if value.get("class_name") in ("DTypePolicy", "Policy") and "config" in value:
            return value["config"]["name"]
        if "class_name" in value and "config" in value:
            # Initializers, regularizers, constraints: a None setting is the default in both
            # Kerases, and Keras 3 adds some (input_axes) that tf_keras does not take.
            inner = {k: v for k, v in _plain(value["config"]).items() if v is not None}
            return {"class_name": value["class_name"], "config": inner}
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):  # also tf_keras' tracked ListWrapper
        return [_plain(v) for v in value]
    return value


def config_for(layer, target_class, source) -> dict:
    config = _plain(layer.get_config())
    if isinstance(config.get("dtype"), dict):
        config["dtype"] = "float32"
    activation = config.get("activation")
    if activation is not None:
        if not isinstance(activation, str) or activation not in source.activations:
            raise UnsupportedModelError(
                f"Layer {layer.name} ({type(layer).__name__}): activation {activation!r} has no "
                f"exact twin. Supported: {sorted(source.activations)}."
            )
        config["activation"] = source.activations[activation]
    if (
        type(layer).__name__ == "BatchNormalization"
        and isinstance(config["axis"], list)
        and len(config["axis"]) == 1
    ):
        config["axis"] = config["axis"][0]  # tf_keras keeps a list, Keras 3 takes one int
    accepted = set(inspect.signature(target_class.__init__).parameters) | set(_BASE_ARGUMENTS)
    for key in sorted(set(config) - accepted):
        value = config.pop(key)
        # An initializer never changes what the twin computes: its weights are copied in.
        if (
            value is not None
            and not key.endswith("_initializer")
            and (key not in _NEUTRAL or value != _NEUTRAL[key])
        ):
            raise UnsupportedModelError(
                f"Layer {layer.name} ({type(layer).__name__}): setting {key}={value!r} has no "
                "twin in the other Keras."
            )
    return config
