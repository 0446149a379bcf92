"""The QAT preflight ("doctor"): which layers TF-MOT can quantize, which it quantizes only at
their output, and which block quantization-aware training, before any training starts."""

import dataclasses
from collections.abc import Iterable

from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_registry,
)

from tfkd.keras import keras  # imported there without a process-wide change

layers = keras.layers

BLOCKS = "blocks QAT"
OUTPUT_ONLY = "output quantized (QuantizeConfig applied)"
STAYS_FLOAT = "stays float (leave_float)"
WARNING = "quantized, check accuracy"

# Layers that carry no arithmetic TF-MOT needs to see, or that it folds by graph transforms.
_FOLDED_AFTER = (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)
# Element-wise TF ops whose output can simply be quantized (hard-swish, SE gates, scaling).
_ELEMENTWISE_TF_OPS = (
    "math.multiply",
    "__operators__.add",
    "math.add",
    "math.truediv",
    "math.subtract",
    "nn.relu6",
    "nn.relu",
    "math.sigmoid",
    "nn.sigmoid",
    "math.scalar_mul",
)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One layer the doctor has something to say about."""

    layer: str
    layer_type: str
    problem: str
    fix: str
    action: str


@dataclasses.dataclass(frozen=True)
class DoctorReport:
    """What QAT will do with a model, layer by layer."""

    model: str
    findings: tuple[Finding, ...]

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.action == BLOCKS]

    @property
    def float_layers(self) -> list[str]:
        return [f.layer for f in self.findings if f.action == STAYS_FLOAT]

    @property
    def ok(self) -> bool:
        return not self.blocking

    def __str__(self) -> str:
        if not self.findings:
            return f"QAT doctor: every layer of '{self.model}' is quantizable as is."
        lines = [f"QAT doctor for '{self.model}':"]
        for f in self.findings:
            lines.append(f"  - {f.layer} ({f.layer_type}): {f.problem} -> {f.action}. Fix: {f.fix}")
        if self.float_layers:
            lines.append(f"  Ops that will stay float: {self.float_layers}")
        return "\n".join(lines)

    def raise_if_blocked(self) -> None:
        if self.blocking:
            raise ValueError(f"The student cannot be quantized as it is.\n{self}")


def _inbound_layers(layer) -> list:
    inbound = []
    for node in layer.inbound_nodes:
        parents = node.inbound_layers
        inbound.extend(parents if isinstance(parents, list) else [parents])
    return inbound


def _tf_op_name(layer) -> str:
    return str(layer.get_config().get("function", ""))


def _examine(layer, registry, leave_float: set[str]):
    """The finding for `layer`, or None when QAT handles it without help."""
    kind = type(layer).__name__
    name = layer.name

    def finding(problem, fix, action=BLOCKS):
        if action == BLOCKS and name in leave_float:
            action = STAYS_FLOAT
        return Finding(name, kind, problem, fix, action)

    if isinstance(layer, keras.Model):
        return Finding(
            name,
            kind,
            "nested model: TF-MOT cannot look inside it",
            "rebuild the student as one flat functional graph (call the inner model's layers "
            "on the outer tensors)",
            BLOCKS,
        )
    if isinstance(layer, layers.Rescaling) and not any(
        isinstance(parent, layers.InputLayer) for parent in _inbound_layers(layer)
    ):
        # Inside the network it is an element-wise affine step (x * scale + offset, as in
        # hard-swish's gate, tfkd.models.keras3): TFLite runs it as quantized MUL/ADD.
        return finding("element-wise scale inside the network", "none needed", OUTPUT_ONLY)
    if isinstance(layer, (layers.Rescaling, layers.Normalization)):
        return finding(
            "normalisation inside the model is not quantizable",
            "remove it and normalise in the input pipeline (tfkd.data.Preprocessing, which "
            "export records in the model card), or pass leave_float=[name]",
        )
    if isinstance(layer, layers.Lambda):
        # Not even leave_float helps: quantize_apply clones the model through its config, and
        # safe deserialization (rightly) refuses Python lambdas.
        return Finding(
            name,
            kind,
            "Lambda layers hold arbitrary Python that TF-MOT can neither quantize nor clone safely",
            "replace it by a built-in layer (Cropping2D, Reshape, Multiply, ...)",
            BLOCKS,
        )
    if kind == "TFOpLambda":
        op = _tf_op_name(layer)
        if op in _ELEMENTWISE_TF_OPS:
            # TF-MOT's annotation wrapper cannot call a TFOpLambda (it passes a list), so the
            # op runs in float during QAT and the converter quantizes it from its ranges.
            return Finding(
                name,
                kind,
                f"raw TF op '{op}' (e.g. part of hard-swish) has no TF-MOT rule",
                "nothing to do for QAT; for an integer-only model use Keras layers "
                "(ReLU(6.0), Multiply, Activation) instead of raw TF ops",
                STAYS_FLOAT,
            )
        return finding(
            f"raw TF op '{op}' (slicing or reshaping) has no quantization rule",
            "use a Keras layer (Cropping2D, Reshape, ...) instead, or pass leave_float=[name]",
        )
    if isinstance(layer, layers.Multiply):
        return Finding(
            name,
            kind,
            "Multiply (e.g. squeeze-excite gate) has no TF-MOT rule",
            "nothing to do: tfkd quantizes its output",
            OUTPUT_ONLY,
        )
    if isinstance(layer, layers.BatchNormalization):
        parents = _inbound_layers(layer)
        if not (len(parents) == 1 and isinstance(parents[0], _FOLDED_AFTER)):
            after = type(parents[0]).__name__ if parents else "the input"
            return finding(
                f"BatchNormalization after {after} cannot be folded into a conv/dense",
                "put it directly after a Conv2D/DepthwiseConv2D/Dense, or remove it",
            )
        return None
    if isinstance(layer, layers.UpSampling2D):
        if layer.interpolation != "nearest":
            return Finding(
                name,
                kind,
                f"{layer.interpolation} UpSampling2D: QAT does not model the "
                "requantization TFLite inserts, so int8 error is larger than QAT shows",
                "use interpolation='nearest' if you can; check the .tflite parity",
                WARNING,
            )
        return None
    if isinstance(layer, layers.Conv2DTranspose):
        return Finding(
            name,
            kind,
            "Conv2DTranspose is quantized per-tensor only",
            "expect a larger int8 drop; check the .tflite parity",
            WARNING,
        )
    if isinstance(layer, layers.InputLayer) or registry.supports(layer):
        return None
    return finding(
        f"TF-MOT 0.8.1 has no quantization rule for {kind}",
        "pass leave_float=[name] to keep it float, or annotate it with your own "
        "tfmot QuantizeConfig",
    )


def doctor(model: keras.Model, leave_float: Iterable[str] = ()) -> DoctorReport:
    """Checks, before any training, what QAT can do with `model`.

    Args:
        model: the float student.
        leave_float: names of layers to keep in float instead of failing on them.

    Returns:
        A report naming each layer that blocks QAT (with the fix), each that gets a remedy, and
        each that will stay float.
    """
    leave_float = set(leave_float)
    if not getattr(model, "_is_graph_network", False):
        finding = Finding(
            model.name,
            type(model).__name__,
            "subclassed model: TF-MOT only quantizes Sequential and Functional models",
            "build the student with keras.Model(inputs, outputs) (see tfkd.models)",
            BLOCKS,
        )
        return DoctorReport(model.name, (finding,))
    names = {layer.name for layer in model.layers}
    unknown = sorted(leave_float - names)
    if unknown:
        raise ValueError(
            f"`leave_float` names layers {unknown} that '{model.name}' does not have. "
            f"Its layers: {sorted(names)}"
        )
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
    findings = [_examine(layer, registry, leave_float) for layer in model.layers]
    return DoctorReport(model.name, tuple(f for f in findings if f is not None))
