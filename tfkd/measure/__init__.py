"""Measurement: the LiteRT runtime (`runtime`), the parity gate between a Keras model and its
`.tflite` files (`parity`), precise batch-norm statistics (`batch_norm`), host latency
(`benchmark`), device latency over adb (`device`) and the paired tests behind every verdict
(`stats`)."""

from tfkd.measure import batch_norm, benchmark, device, parity, runtime, stats

__all__ = ["batch_norm", "benchmark", "device", "parity", "runtime", "stats"]
