"""Export: TFLite conversion in every mode with the model card (`conversion`), the metadata
MediaPipe and Android read (`metadata`), and inspection of a `.tflite` file (`tflite_info`)."""

from tfkd.export import metadata, tflite_info
from tfkd.export.conversion import (
    CARD_FILE,
    CARD_VERSION,
    DEFAULT_REPRESENTATIVE_SIZE,
    INTEGER_MODES,
    LABELS_FILE,
    MODES,
    OUTPUTS,
    RepresentativeSet,
    check_card,
    check_mode,
    convert,
    export,
    largest_representative_size,
    raw_byte_quantization,
    read_card,
    representative_set,
    set_input_quantization,
    tensor_card,
    write_tflite,
)

__all__ = [
    "CARD_FILE",
    "CARD_VERSION",
    "DEFAULT_REPRESENTATIVE_SIZE",
    "INTEGER_MODES",
    "LABELS_FILE",
    "MODES",
    "OUTPUTS",
    "RepresentativeSet",
    "check_card",
    "check_mode",
    "convert",
    "export",
    "largest_representative_size",
    "metadata",
    "raw_byte_quantization",
    "read_card",
    "representative_set",
    "set_input_quantization",
    "tensor_card",
    "tflite_info",
    "write_tflite",
]
