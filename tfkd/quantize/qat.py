"""Quantization-aware training (QAT) of a functional student.

QAT is applied to the student alone, never to the `Distiller` (TF-MOT only accepts Sequential and
Functional models). Quantization-aware distillation is then plain distillation of the QAT student:

    report = tfkd.quantize.doctor(student)          # what TF-MOT can and cannot quantize
    qat_student = tfkd.quantize.quantize_student(student)
    tfkd.Distiller(qat_student, teacher, ...).fit(...)   # the float teacher keeps teaching

Post-training quantization (dynamic-range, float16, full int8) needs no training: it is
`tfkd.export.convert(float_student, mode)`.
"""

from collections.abc import Sequence

from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_configs,
)

from tfkd.keras import keras, tfmot  # imported there without a process-wide change
from tfkd.models import keras3
from tfkd.quantize.doctor import OUTPUT_ONLY, doctor


def quantize_student(student: keras.Model, leave_float: Sequence[str] = ()) -> keras.Model:
    """Returns a QAT copy of `student` (sharing its float weights as the starting point). A
    Keras 3 student is quantized as its tf_keras twin (`tfkd.models.keras3.to_keras2`).

    Raises:
        ValueError: with the doctor's report when a layer blocks QAT.
    """
    if keras3.is_keras3_model(student):
        student = keras3.to_keras2(student)
    report = doctor(student, leave_float)
    report.raise_if_blocked()
    remedies = {f.layer for f in report.findings if f.action == OUTPUT_ONLY}
    keep_float = set(report.float_layers)
    annotate = tfmot.quantization.keras.quantize_annotate_layer

    def annotated(layer):
        if layer.name in keep_float or isinstance(layer, keras.layers.InputLayer):
            return layer
        if layer.name in remedies:
            config = default_8bit_quantize_configs.Default8BitOutputQuantizeConfig()
            return annotate(layer, quantize_config=config)
        return annotate(layer)

    # Reusing the original layer objects keeps the trained float weights.
    annotated_model = keras.models.clone_model(student, clone_function=annotated)
    output_config = default_8bit_quantize_configs.Default8BitOutputQuantizeConfig
    scope = {"Default8BitOutputQuantizeConfig": output_config}
    with tfmot.quantization.keras.quantize_scope(scope):
        return tfmot.quantization.keras.quantize_apply(annotated_model)


def is_quantization_aware(model: keras.Model) -> bool:
    """True for a model returned by `quantize_student` (it carries fake-quant wrappers)."""
    return any(type(layer).__name__.startswith("Quantize") for layer in model.layers)


def load_quantized(
    float_student: keras.Model, weights_path: str, leave_float: Sequence[str] = ()
) -> keras.Model:
    """Rebuilds a QAT student saved with `model.save_weights(path)` in HDF5 (a `.h5` path).

    TF-MOT's wrappers do not round-trip through the `.keras` format (the quantize layer's
    variables are renamed on load), so a QAT student is stored as weights and rebuilt from its
    float architecture, which also keeps loading free of deserialised code. HDF5 weights are
    matched by layer order, not by the auto-generated names that differ between processes.
    """
    start = keras.models.clone_model(float_student)
    qat = quantize_student(start, leave_float)
    qat.load_weights(weights_path)
    return qat
