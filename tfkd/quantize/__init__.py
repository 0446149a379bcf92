"""Quantization-aware training with TF-MOT (`qat`) and its preflight, the QAT doctor (`doctor`)."""

from tfkd.quantize.doctor import (
    BLOCKS,
    OUTPUT_ONLY,
    STAYS_FLOAT,
    WARNING,
    DoctorReport,
    Finding,
    doctor,
)
from tfkd.quantize.qat import is_quantization_aware, load_quantized, quantize_student

__all__ = [
    "BLOCKS",
    "OUTPUT_ONLY",
    "STAYS_FLOAT",
    "WARNING",
    "DoctorReport",
    "Finding",
    "doctor",
    "is_quantization_aware",
    "load_quantized",
    "quantize_student",
]
