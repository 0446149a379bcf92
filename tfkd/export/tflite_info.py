"""What is inside a `.tflite` file: ops, tensor types, quantization, and what stayed float."""

import dataclasses

import numpy as np

from tfkd.measure.runtime import load_interpreter

_FLOAT_TYPES = ("float32", "float16")


@dataclasses.dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: float | None
    zero_point: int | None


@dataclasses.dataclass(frozen=True)
class Op:
    index: int
    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    @property
    def is_float(self) -> bool:
        """Computes in float: a float output, other than a DEQUANTIZE producing a model output."""
        return any(t.dtype in _FLOAT_TYPES for t in self.outputs) and self.name != "DEQUANTIZE"


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    ops: tuple[Op, ...]
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    @property
    def float_ops(self) -> list[Op]:
        return [op for op in self.ops if op.is_float]

    @property
    def integer_only(self) -> bool:
        """No float compute; float I/O converted by QUANTIZE/DEQUANTIZE at the edges is allowed."""
        return not self.float_ops

    def to_dict(self) -> dict:
        return {
            "inputs": [dataclasses.asdict(t) for t in self.inputs],
            "outputs": [dataclasses.asdict(t) for t in self.outputs],
            "ops": [
                {
                    "index": op.index,
                    "op": op.name,
                    "inputs": [t.dtype for t in op.inputs],
                    "outputs": [t.dtype for t in op.outputs],
                }
                for op in self.ops
            ],
            "float_ops": [f"{op.index}:{op.name}" for op in self.float_ops],
            "integer_only": self.integer_only,
        }

    def table(self) -> str:
        lines = [f"{'#':>3}  {'op':<22} {'inputs':<28} outputs"]
        for op in self.ops:
            ins = ",".join(t.dtype for t in op.inputs)
            outs = ",".join(f"{t.dtype}{_quant(t)}" for t in op.outputs)
            flag = "  <- float" if op.is_float else ""
            lines.append(f"{op.index:>3}  {op.name:<22} {ins:<28} {outs}{flag}")
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            for t in tensors:
                lines.append(f"{kind}: {t.name} {t.dtype}{list(t.shape)}{_quant(t)}")
        verdict = (
            "integer-only"
            if self.integer_only
            else f"{len(self.float_ops)} op(s) compute in float: "
            + ", ".join(f"{op.index}:{op.name}" for op in self.float_ops)
        )
        lines.append(verdict)
        return "\n".join(lines)


def _quant(t: Tensor) -> str:
    return f" (scale={t.scale:.6g}, zero_point={t.zero_point})" if t.scale else ""


def describe(model: str | bytes) -> ModelInfo:
    """Reads ops and tensors of a `.tflite` path or flatbuffer, without delegates."""
    from ai_edge_litert.interpreter import OpResolverType

    interpreter = load_interpreter(
        model, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    details = {d["index"]: d for d in interpreter.get_tensor_details()}

    def tensor(index: int) -> Tensor:
        d = details[index]
        scale, zero_point = d["quantization"]
        return Tensor(
            index,
            d["name"],
            np.dtype(d["dtype"]).name,
            tuple(int(s) for s in d["shape"]),
            float(scale) if scale else None,
            int(zero_point) if scale else None,
        )

    ops = tuple(
        Op(
            op["index"],
            op["op_name"],
            tuple(tensor(i) for i in op["inputs"] if i >= 0),
            tuple(tensor(i) for i in op["outputs"]),
        )
        for op in interpreter._get_ops_details()
    )
    return ModelInfo(
        ops,
        tuple(tensor(d["index"]) for d in interpreter.get_input_details()),
        tuple(tensor(d["index"]) for d in interpreter.get_output_details()),
    )
