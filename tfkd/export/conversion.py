"""TFLite conversion in every mode, with labels and a model card, written atomically.

Modes (`MODES`):
- `float32`: no quantization.
- `float16`: float16 weights, float compute where the device has no fp16 path.
- `dynamic`: int8 weights, activations quantized on the fly (dynamic-range quantization).
- `int8`: full integer model, float32 input/output (quantize/dequantize at the edges).
- `int8_io_int8`, `int8_io_uint8`: full integer with int8 or uint8 input and output tensors.
  Inputs are the *normalised* image quantized with the input scale and zero point recorded in the
  model card; for `int8_io_uint8` those equal the normalisation, so raw 0-255 camera bytes go
  straight in (MediaPipe Tasks feeds uint8 models exactly that way).

Every file carries TFLite metadata (`tfkd.export.metadata`): labels, normalisation and whether the
output is probabilities (a softmax folded into the graph, the default, what apps expect) or
logits (what a teacher keeps for distillation).

A float student gets post-training quantization (`dynamic`, `float16`, `int8*` calibrated on the
representative set); a QAT student (`tfkd.quantize.quantize_student`) carries its own ranges and
converts to the `int8*` modes only.
"""

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from tfkd import data as data_lib
from tfkd import files
from tfkd.export import metadata
from tfkd.keras import keras
from tfkd.measure.runtime import load_interpreter
from tfkd.quantize import is_quantization_aware
from tfkd.tasks import classification

MODES = ("float32", "float16", "dynamic", "int8", "int8_io_int8", "int8_io_uint8")
INTEGER_MODES = ("int8", "int8_io_int8", "int8_io_uint8")
_QUANTIZATION = {
    "float32": None,
    "float16": "float16",
    "dynamic": "dynamic",
    "int8": "int8",
    "int8_io_int8": "int8",
    "int8_io_uint8": "int8",
}
_IO_TYPES = {"int8_io_int8": tf.int8, "int8_io_uint8": tf.uint8}
CARD_VERSION = 2
OUTPUTS = metadata.OUTPUTS
DEFAULT_REPRESENTATIVE_SIZE = 200


# What an export directory holds beside its `.tflite` files.
CARD_FILE = "model_card.json"
LABELS_FILE = "labels.txt"


def check_mode(mode: str, model: keras.Model | None = None) -> str:
    """Returns `mode` if it is valid (for `model`), else raises `ValueError` listing the choices."""
    if mode not in MODES:
        raise ValueError(f"Unknown quantization mode '{mode}'. Available: {list(MODES)}")
    if model is not None and is_quantization_aware(model) and mode not in INTEGER_MODES:
        raise ValueError(
            f"Mode '{mode}' needs a float model, but '{model.name}' is quantization-aware. "
            f"Export a QAT student as one of {list(INTEGER_MODES)}, or export the float student."
        )
    return mode


@dataclasses.dataclass(frozen=True)
class RepresentativeSet:
    """Normalised calibration images drawn per class from the training split."""

    images: np.ndarray
    labels: np.ndarray

    @property
    def sha256(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.images).tobytes()).hexdigest()

    def describe(self) -> dict:
        labeled = self.labels[self.labels != data_lib.UNLABELED]
        return {
            "size": int(len(self.images)),
            "sha256": self.sha256,
            "split": "train",
            "per_class": np.bincount(labeled).tolist(),
            "unlabeled": int(len(self.labels) - len(labeled)),
        }


def representative_set(
    splits: data_lib.Splits, size: int = DEFAULT_REPRESENTATIVE_SIZE
) -> RepresentativeSet:
    """The first `size` training images in a class-balanced round robin, normalised.

    Deterministic because the training split's order is; balanced so that no class's activation
    range is missing from calibration.
    """
    classes = splits.num_classes
    if isinstance(size, bool) or not isinstance(size, int) or size < classes:
        raise ValueError(
            f"The representative set needs at least one image per class ({classes}). "
            f"Received: size={size!r}"
        )
    quota = [size // classes + (c < size % classes) for c in range(classes)]
    taken: list[list[np.ndarray]] = [[] for _ in range(classes)]
    unlabeled: list[np.ndarray] = []
    for image, label in splits.train.as_numpy_iterator():
        if label == data_lib.UNLABELED:
            # Real inputs too: they top up classes short of labeled images (few labels).
            if len(unlabeled) < size:
                unlabeled.append(image)
        elif len(taken[label]) < quota[label]:
            taken[label].append(image)
            if all(len(t) == q for t, q in zip(taken, quota)):
                break
    short = sum(q - len(t) for t, q in zip(taken, quota))
    if short > len(unlabeled):
        missing = [splits.class_names[c] for c in range(classes) if len(taken[c]) < quota[c]]
        raise ValueError(
            f"The training split has too few images of classes {missing} for a representative "
            f"set of {size}. Lower `size` to at most {sum(len(t) for t in taken)}."
        )
    # Round robin over classes, so a prefix of the set is balanced too.
    order = [(i, c) for i in range(max(quota)) for c in range(classes) if i < len(taken[c])]
    raw = np.stack([taken[c][i] for i, c in order] + unlabeled[:short])
    labels = [c for _, c in order] + [data_lib.UNLABELED] * short
    images = splits.preprocessing.normalize(raw).numpy()
    return RepresentativeSet(images, np.array(labels, np.int64))


def largest_representative_size(labels: np.ndarray, num_classes: int) -> int:
    """The largest `size` that `representative_set` can fill from training `labels` (unlabeled
    examples top up classes short of images); 0 when not even one image per class fits."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels != data_lib.UNLABELED], minlength=num_classes)
    unlabeled = int(np.sum(labels == data_lib.UNLABELED))

    def fits(size: int) -> bool:
        quota = size // num_classes + (np.arange(num_classes) < size % num_classes)
        return int(np.maximum(quota - counts, 0).sum()) <= min(unlabeled, size)

    low, high = 0, int(labels.size)  # fits() only turns false as size grows
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low if low >= num_classes else 0


def convert(
    model: keras.Model,
    mode: str,
    representative: RepresentativeSet | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> bytes:
    """Converts `model` to a `.tflite` flatbuffer in `mode`; `progress(done, total)` follows
    the calibration over the representative images of a post-training integer mode."""
    check_mode(mode, model)
    qat = is_quantization_aware(model)
    converter = _frozen_graph_converter(model)
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode in INTEGER_MODES:
        if not qat:
            if representative is None or len(representative.images) == 0:
                raise ValueError(
                    f"Mode '{mode}' on a float model is post-training quantization and needs a "
                    "representative set (tfkd.export.representative_set(splits))."
                )
            images = representative.images

            def calibration():
                for i in range(len(images)):
                    yield [images[i : i + 1]]
                    if progress is not None:
                        progress(i + 1, len(images))

            converter.representative_dataset = calibration
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if mode in _IO_TYPES:
            converter.inference_input_type = _IO_TYPES[mode]
            converter.inference_output_type = _IO_TYPES[mode]
    return converter.convert()


def _frozen_graph_converter(model: keras.Model) -> tf.lite.TFLiteConverter:
    """A converter of `model`'s inference call, traced once and frozen to constants.

    Not `from_keras_model`: even told not to lower to a SavedModel, it first writes the model as
    one and reads it back only to learn that it need not, then converts the same frozen graph as
    this. That detour was 75-90% of every conversion (docs/export.md); the files are the same
    but for the byte that records the source (a Keras model, a concrete function)."""
    (name,) = model.input_names
    spec = tf.TensorSpec(model.input.shape, model.input.dtype, name=name)
    serve = tf.function(lambda image: model(image, training=False), input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], model
    )
    converter.experimental_lower_to_saved_model = False
    return converter


def raw_byte_quantization(preprocessing: data_lib.Preprocessing) -> tuple[float, int]:
    """The uint8 input scale and zero point under which raw pixel bytes *are* the normalised
    image: `(raw * scale - mean) / std = (raw - mean / scale) * scale / std`.

    Needs one mean and one std for every channel; the zero point is rounded to an integer
    (half a pixel level at worst, far below an int8 input step).
    """
    if len(set(preprocessing.mean)) != 1 or len(set(preprocessing.std)) != 1:
        raise ValueError(
            "int8_io_uint8 takes raw camera bytes, which needs one mean and one std for every "
            f"channel; this preprocessing has mean={list(preprocessing.mean)}, "
            f"std={list(preprocessing.std)}. Export `int8` (float input) instead."
        )
    zero_point = int(round(preprocessing.mean[0] / preprocessing.scale))
    if not 0 <= zero_point <= 255:
        raise ValueError(
            f"The normalisation's zero point {zero_point} is outside uint8; export "
            "`int8` (float input) instead."
        )
    return preprocessing.scale / preprocessing.std[0], zero_point


def set_input_quantization(content: bytes, scale: float, zero_point: int) -> bytes:
    """`content` with its uint8 input read as `(q - zero_point) * scale`: the QUANTIZE op the
    converter puts after the input requantizes from these parameters to the model's own."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    subgraph = model.subgraphs[0]
    index = subgraph.inputs[0]
    consumers = [op for op in subgraph.operators if index in list(op.inputs)]
    codes = [
        max(
            model.operatorCodes[op.opcodeIndex].builtinCode,
            model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode,
        )
        for op in consumers
    ]
    quantize = flatbuffer_utils.schema_fb.BuiltinOperator.QUANTIZE
    if codes != [quantize]:
        raise ValueError(
            "The converted model does not requantize its uint8 input in one "
            f"QUANTIZE op (its consumers have builtin codes {codes}); cannot make "
            "it take raw bytes."
        )
    quantization = subgraph.tensors[index].quantization
    quantization.scale = [float(scale)]
    quantization.zeroPoint = [int(zero_point)]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def tensor_card(detail: dict) -> dict:
    """Shape, dtype and quantization of an interpreter input/output detail."""
    scale, zero_point = detail["quantization"]
    quantized = detail["dtype"] in (np.int8, np.uint8)
    return {
        "name": detail["name"],
        "shape": [int(d) for d in detail["shape_signature"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale) if quantized else None,
        "zero_point": int(zero_point) if quantized else None,
    }


def write_tflite(path: str, content: bytes) -> dict:
    """Writes `content` to `path` atomically, after checking LiteRT can load it.

    Returns the file's entry for the model card (hash, size, input and output tensors).
    """
    interpreter = load_interpreter(content)
    with files.atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    return {
        "file": os.path.basename(path),
        "sha256": hashlib.sha256(content).hexdigest(),
        "size_bytes": len(content),
        "input": tensor_card(interpreter.get_input_details()[0]),
        "output": tensor_card(interpreter.get_output_details()[0]),
    }


def export(
    model: keras.Model,
    out_dir: str,
    modes: Sequence[str],
    *,
    preprocessing: data_lib.Preprocessing,
    class_names: Sequence[str],
    representative: RepresentativeSet | None = None,
    name: str = "student",
    source_run: str | None = None,
    output: str = "probabilities",
    description: str = "",
    progress: Callable[[str], Callable[[int, int], None]] | None = None,
) -> dict:
    """Converts `model` (emitting logits) in every mode of `modes` into `out_dir`, with
    metadata inside every file, labels and a model card. `progress(variant)`, when given, makes
    the `progress(done, total)` that follows a variant's calibration.

    Files: `<name>_<mode>.tflite`, `labels.txt`, `model_card.json`. An existing card is
    updated, so a float student and its QAT version can share one directory. `output` is
    `probabilities` (a softmax is appended) or `logits`.

    Returns:
        The model card as written.
    """
    modes = [check_mode(m, model) for m in modes]
    if output not in OUTPUTS:
        raise ValueError(f"`output` must be one of {list(OUTPUTS)}. Received: {output!r}")
    if not modes:
        raise ValueError(f"`modes` is empty. Choose from {list(MODES)}")
    if model.output_shape[-1] != len(class_names):
        raise ValueError(
            f"'{model.name}' emits {model.output_shape[-1]} logits but {len(class_names)} "
            "labels were given."
        )
    os.makedirs(out_dir, exist_ok=True)
    card_path = os.path.join(out_dir, CARD_FILE)
    card: dict = (
        read_card(out_dir)
        if os.path.exists(card_path)
        else {
            "format_version": CARD_VERSION,
            "labels_file": LABELS_FILE,
            "labels": list(class_names),
            "preprocessing": {
                **preprocessing.to_dict(),
                "formula": "input = (raw_pixel * scale - mean) / std, per channel",
            },
            "variants": {},
        }
    )
    if card["labels"] != list(class_names) or card["preprocessing"]["scale"] != preprocessing.scale:
        raise ValueError(
            f"{card_path} was written for other labels or preprocessing; export into a new "
            "directory."
        )
    card["source_run"] = source_run
    if representative is not None:
        card["representative_set"] = representative.describe()
    info = metadata.ImageClassifierInfo(
        name=name,
        description=description or f"Image classifier exported by tfkd ({name}).",
        version=str(CARD_VERSION),
        labels=list(class_names),
        mean=[m / preprocessing.scale for m in preprocessing.mean],
        std=[s / preprocessing.scale for s in preprocessing.std],
        output=output,
    )
    converted = classification.with_probabilities(model) if output == "probabilities" else model
    files.write_text(os.path.join(out_dir, LABELS_FILE), "\n".join(class_names) + "\n")
    for mode in modes:
        path = os.path.join(out_dir, f"{name}_{mode}.tflite")
        content = convert(
            converted, mode, representative, progress(f"{name}_{mode}") if progress else None
        )
        if mode == "int8_io_uint8":
            content = set_input_quantization(content, *raw_byte_quantization(preprocessing))
        entry = write_tflite(path, metadata.write_image_classifier(content, info))
        entry.update(
            quantization=_QUANTIZATION[mode],
            mode=mode,
            output_kind=output,
            quantization_aware=is_quantization_aware(model),
            accuracy=None,
        )
        card["variants"][f"{name}_{mode}"] = entry
    write_card(out_dir, card)
    return card


def write_card(out_dir: str, card: dict) -> None:
    """Writes `card` as `model_card.json` in `out_dir`, atomically."""
    files.write_text(os.path.join(out_dir, CARD_FILE), json.dumps(card, indent=2, sort_keys=True))


def read_card(out_dir: str) -> dict:
    """Reads `model_card.json` from `out_dir`."""
    path = os.path.join(out_dir, CARD_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model card at {path}; export the model first.")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_card(out_dir: str) -> None:
    """Raises `ValueError` when a `.tflite` file does not match its model card entry."""
    card = read_card(out_dir)
    for _variant, entry in card["variants"].items():
        path = os.path.join(out_dir, entry["file"])
        with open(path, "rb") as f:
            content = f.read()
        if hashlib.sha256(content).hexdigest() != entry["sha256"]:
            raise ValueError(
                f"{path} does not match model_card.json (sha256 differs): the file was replaced "
                "after export. Re-export, or restore the file."
            )
        interpreter = load_interpreter(content)
        for kind, details in (
            ("input", interpreter.get_input_details()[0]),
            ("output", interpreter.get_output_details()[0]),
        ):
            actual = tensor_card(details)
            if actual != entry[kind]:
                raise ValueError(
                    f"The {kind} of {path} is {actual} but model_card.json says {entry[kind]}."
                )
