"""Host latency of `.tflite` files with the LiteRT interpreter, and model cost (params, MACs).

Measured the way the official `benchmark_model` does: build the interpreter (init time), one
first run, `warmup` untimed runs, then `runs` timed `invoke()` calls on a fixed input; input
preparation is outside the timed region. The result says how it was measured (threads, XNNPACK,
run counts, input source) so that host and device figures can be compared line by line.
"""

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np

from tfkd.export import tflite_info
from tfkd.measure.runtime import TFLiteClassifier

Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Summary of per-run latencies in milliseconds (warm-up runs excluded).

    Percentiles are None where a tool does not report them (`benchmark_model` prints p5/median/p95).
    """

    runs: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> "LatencyStats":
        samples = np.asarray(samples_ms, np.float64)
        if samples.size == 0:
            raise ValueError("No timed runs to summarise; `runs` must be >= 1.")
        p50, p90, p99 = np.percentile(samples, [50, 90, 99])
        return cls(
            int(samples.size),
            float(samples.mean()),
            float(samples.std()),
            float(samples.min()),
            float(p50),
            float(p90),
            float(p99),
            float(samples.max()),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """Parameters and multiply-accumulates of one inference (batch 1)."""

    params: int
    macs: int


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One latency measurement of one `.tflite` file, with how it was taken."""

    model: str
    size_bytes: int
    threads: int
    xnnpack: bool
    warmup: int
    input_source: str
    init_ms: float
    first_run_ms: float
    latency: LatencyStats
    peak_memory_growth_bytes: int
    cost: ModelCost
    where: str = "host"

    @property
    def gmacs_per_second(self) -> float | None:
        """Multiply-accumulates per second at the median latency (None without a median)."""
        if self.latency.p50_ms is None:
            return None
        return self.cost.macs / (self.latency.p50_ms / 1000.0) / 1e9

    def to_dict(self) -> dict:
        result = dataclasses.asdict(self)
        result["gmacs_per_second"] = self.gmacs_per_second
        return result


DEFAULT_RUNS = 50

_LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def model_cost(model: str) -> ModelCost:
    """Counts parameters and the MACs of conv, depthwise and dense ops of a `.tflite` file.

    Parameters are the constant inputs of layer ops counted per use (the converter shares
    identical constants, such as two all-zero biases, between ops) plus the other ops' constant
    non-int32 inputs (int32 constants there are axes and shapes). Element-wise ops, pooling and
    activations add no MACs, as in the papers' MAC figures.
    """
    info = tflite_info.describe(model)
    produced = {t.index for op in info.ops for t in op.outputs}
    produced |= {t.index for t in info.inputs}
    params = 0
    other_constants = {}
    macs = 0
    for op in info.ops:
        constants = [t for t in op.inputs if t.index not in produced]
        if op.name in _LAYER_OPS:
            params += sum(int(np.prod(t.shape)) for t in constants)
        else:
            other_constants.update(
                {t.index: int(np.prod(t.shape)) for t in constants if t.dtype != "int32"}
            )
        if op.name not in _LAYER_OPS[:3] or len(op.inputs) < 2:
            continue
        out_shape, weights = op.outputs[0].shape, op.inputs[1].shape
        if op.name == "CONV_2D":  # weights: [out_c, kh, kw, in_c]
            macs += int(np.prod(out_shape[1:])) * int(np.prod(weights[1:]))
        elif op.name == "DEPTHWISE_CONV_2D":  # weights: [1, kh, kw, out_c]
            macs += int(np.prod(out_shape[1:])) * weights[1] * weights[2]
        else:  # FULLY_CONNECTED, weights: [out, in]
            macs += int(np.prod(out_shape[:-1])) * weights[0] * weights[1]
    return ModelCost(params=params + sum(other_constants.values()), macs=int(macs))


def _status_bytes(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> int:
    """Restarts the kernel's peak-RSS counter (Linux) and returns the current resident set, so
    that `peak_rss_bytes()` afterwards covers only what follows. (A difference of the process's
    lifetime peaks would read 0 whenever an earlier peak, e.g. loading data, was higher.)"""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")
    return _status_bytes("VmRSS")


def peak_rss_bytes() -> int:
    """Peak resident set since the last `reset_peak_rss()` (or since the process started)."""
    return _status_bytes("VmHWM")


def _input_batch(classifier: TFLiteClassifier, inputs: np.ndarray | None, seed: int):
    """One example, quantized as the model expects: real data when given, else random."""
    detail = classifier.interpreter.get_input_details()[0]
    if inputs is not None:
        example = np.asarray(inputs[:1], np.float32)
        expected = tuple(int(d) for d in detail["shape"][1:])
        if example.shape[1:] != expected:
            raise ValueError(
                f"`inputs` have shape {example.shape[1:]} per example but the "
                f"model takes {expected}."
            )
        return classifier.quantize(example), "data"
    rng = np.random.default_rng(seed)
    shape = [1, *detail["shape"][1:]]
    if detail["dtype"] == np.float32:
        return rng.normal(size=shape).astype(np.float32), "random"
    info = np.iinfo(detail["dtype"])
    return rng.integers(info.min, info.max + 1, size=shape).astype(detail["dtype"]), "random"


def measure(
    model: str,
    *,
    threads: int = 1,
    warmup: int = 10,
    runs: int = DEFAULT_RUNS,
    inputs: np.ndarray | None = None,
    xnnpack: bool = True,
    seed: int = 0,
    clock: Clock = time.perf_counter,
) -> Measurement:
    """Measures host latency of the `.tflite` file `model` with the LiteRT interpreter.

    Args:
        threads: interpreter threads.
        warmup: untimed runs after the first one.
        runs: timed runs.
        inputs: normalised float images (the first one is used, quantized as the model
            expects); random data when None.
        xnnpack: use LiteRT's default XNNPACK delegate (as apps do); False runs the builtin
            kernels.
        clock: seconds as a float; replaceable for tests.
    """
    for name, value, low in (("threads", threads, 1), ("warmup", warmup, 0), ("runs", runs, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}. Received: {name}={value!r}")
    from ai_edge_litert.interpreter import OpResolverType

    options = (
        {}
        if xnnpack
        else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    )
    rss_before = reset_peak_rss()
    started = clock()
    classifier = TFLiteClassifier(model, num_threads=threads, **options)
    init_ms = (clock() - started) * 1000.0
    interpreter = classifier.interpreter
    detail = interpreter.get_input_details()[0]
    example, source = _input_batch(classifier, inputs, seed)
    if tuple(detail["shape"]) != example.shape:
        interpreter.resize_tensor_input(detail["index"], list(example.shape))
        interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], example)

    def timed_invoke() -> float:
        start = clock()
        interpreter.invoke()
        return (clock() - start) * 1000.0

    first_run_ms = timed_invoke()
    for _ in range(warmup):
        timed_invoke()
    samples = [timed_invoke() for _ in range(runs)]
    return Measurement(
        model=os.path.abspath(model),
        size_bytes=os.path.getsize(model),
        threads=threads,
        xnnpack=xnnpack,
        warmup=warmup,
        input_source=source,
        init_ms=init_ms,
        first_run_ms=first_run_ms,
        latency=LatencyStats.from_samples(samples),
        peak_memory_growth_bytes=max(0, peak_rss_bytes() - rss_before),
        cost=model_cost(model),
    )


def latency_floor(
    students: Sequence[str],
    modes: Sequence[str],
    export_untrained: Callable[[str, str, str], str],
    threads: int = 1,
    runs: int = 20,
    inputs: np.ndarray | None = None,
) -> tuple[float, str]:
    """The lowest p50 latency on this host among `students` (builder names) in each of `modes`:
    `export_untrained(student, mode, directory)` writes each untrained (weights do not change a
    classifier's latency) into a scratch directory and returns the file's path; each is fed
    `inputs` (random data when None). Returns the p50 in ms and which student and mode reached
    it."""
    best = (float("inf"), "")
    with tempfile.TemporaryDirectory() as scratch:
        for student in students:
            for mode in modes:
                path = export_untrained(student, mode, scratch)
                p50 = measure(path, threads=threads, runs=runs, inputs=inputs).latency.p50_ms
                if p50 is not None and p50 < best[0]:
                    best = (p50, f"{student} in {mode}")
    return best


def format_table(measurements: Sequence) -> str:
    """A plain-text table of host or device measurements (anything with `latency`)."""
    lines = [
        f"{'model':<34} {'where':<7} {'thr':>3} {'KiB':>8} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'mean ms':>8} {'runs':>5}"
    ]
    for m in measurements:

        def ms(value):
            return f"{value:8.3f}" if value is not None else f"{'-':>8}"

        lines.append(
            f"{os.path.basename(m.model):<34} {m.where:<7} {m.threads:>3} "
            f"{m.size_bytes / 1024:>8.1f} {ms(m.latency.p50_ms)} {ms(m.latency.p90_ms)} "
            f"{ms(m.latency.mean_ms)} {m.latency.runs:>5}"
        )
    return "\n".join(lines)
