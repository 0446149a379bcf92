"""TFLite metadata inside a `.tflite` file: what MediaPipe Tasks' `ImageClassifier` and
`ObjectDetector` and Android Studio's model binding read (normalization, labels, output
semantics).

The metadata is a `tflite.ModelMetadata` flatbuffer (schema 1.5.0, vendored in
`tfkd.third_party`) stored in the model's buffer named `TFLITE_METADATA`; the label file is an
associated file, carried in a zip archive appended to the model (the layout tflite-support's
populator writes and MediaPipe reads). LiteRT ignores both.
"""

import dataclasses
import io
import zipfile
from collections.abc import Sequence

import numpy as np
from tensorflow.lite.tools import flatbuffer_utils

from tfkd.third_party import tflite_metadata_schema as schema

METADATA_NAME = "TFLITE_METADATA"
OUTPUTS = ("probabilities", "logits")
LABELS_FILE = "labels.txt"
# The schema's own rule: the largest "Added in" version among the fields populated, and at
# least the version of the file identifier (M001 = 1.0.0).
_BASE_PARSER_VERSION = (1, 0, 0)


@dataclasses.dataclass(frozen=True)
class ImageModelInfo:
    """What the metadata of a model on images says, whatever its task.

    Attributes:
        name, description, version: of the model.
        labels: one per class, in output order.
        mean, std: per channel, in raw pixel units: the model's input is
            `(pixel - mean) / std` (MediaPipe's NormalizationOptions). A uint8 input whose
            quantization equals this normalisation takes the raw pixel bytes as they are.
        author: written into the metadata.
    """

    name: str
    description: str
    version: str
    labels: Sequence[str]
    mean: Sequence[float]
    std: Sequence[float]
    author: str = "tfkd"

    def __post_init__(self):
        bad = [label for label in self.labels if "\n" in label or "\r" in label or not label]
        if bad:
            raise ValueError(
                f"Labels must be non-empty and on one line each (the label file has "
                f"one per line). Received: {bad!r}"
            )
        if len(self.mean) != len(self.std) or not all(s > 0 for s in self.std):
            raise ValueError(
                f"`mean` and `std` need one value per channel and std > 0. "
                f"Received: mean={list(self.mean)}, std={list(self.std)}"
            )


@dataclasses.dataclass(frozen=True)
class ImageClassifierInfo(ImageModelInfo):
    """An image classifier's metadata; `output` is `probabilities` (softmax in the graph) or
    `logits`."""

    output: str = "probabilities"

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise ValueError(f"`output` must be one of {list(OUTPUTS)}. Received: {self.output!r}")
        super().__post_init__()


def _archive_start(model: bytes) -> int:
    """Where an appended zip of associated files starts (`len(model)` when there is none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            offsets = [info.header_offset for info in archive.infolist()]
    except zipfile.BadZipFile:
        return len(model)
    return min(offsets) if offsets else len(model)


def _split(model: bytes) -> tuple[bytes, dict[str, bytes]]:
    """The flatbuffer alone and the associated files appended to it."""
    start = _archive_start(model)
    files = {}
    if start < len(model):
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            files = {name: archive.read(name) for name in archive.namelist()}
    return model[:start], files


def _image_input(model_object) -> tuple[int, ...]:
    subgraph = model_object.subgraphs[0]
    if len(subgraph.inputs) != 1:
        raise ValueError(
            f"Image classifier metadata needs a model with one input; this one has "
            f"{len(subgraph.inputs)}."
        )
    shape = tuple(int(d) for d in subgraph.tensors[subgraph.inputs[0]].shape)
    if len(shape) != 4 or shape[-1] not in (1, 3):
        raise ValueError(
            f"Image classifier metadata needs an image input (batch, height, width, "
            f"1 or 3 channels); this model's input has shape {list(shape)}."
        )
    return shape


def _output_classes(model_object) -> int:
    subgraph = model_object.subgraphs[0]
    return int(subgraph.tensors[subgraph.outputs[0]].shape[-1])


def _input_quantization(model_object) -> str:
    """How a quantized input tensor reads, for the metadata's description."""
    subgraph = model_object.subgraphs[0]
    tensor = subgraph.tensors[subgraph.inputs[0]]
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return ""
    dtype = {3: "uint8", 9: "int8"}.get(int(tensor.type), f"type {int(tensor.type)}")
    return (
        f" Quantized {dtype} input: value = (q - {int(q.zeroPoint[0])}) * {float(q.scale[0]):.9g}."
    )


def _image_tensor(
    info: ImageModelInfo, channels: int, quantization: str
) -> "schema.TensorMetadataT":
    """The input image: colour space and the normalisation MediaPipe applies before the model."""
    normalization = schema.ProcessUnitT()
    normalization.optionsType = schema.ProcessUnitOptions.NormalizationOptions
    normalization.options = schema.NormalizationOptionsT()
    normalization.options.mean = [float(m) for m in info.mean]
    normalization.options.std = [float(s) for s in info.std]

    image = schema.TensorMetadataT()
    image.name = "image"
    image.description = (
        ("Input image, RGB" if channels == 3 else "Input image, grayscale")
        + (
            f"; input = (pixel - {list(info.mean)}) / {list(info.std)} per channel, pixel as "
            "stored (0-255 for photos)."
        )
        + quantization
    )
    image.content = schema.ContentT()
    image.content.contentPropertiesType = schema.ContentProperties.ImageProperties
    image.content.contentProperties = schema.ImagePropertiesT()
    image.content.contentProperties.colorSpace = (
        schema.ColorSpaceType.RGB if channels == 3 else schema.ColorSpaceType.GRAYSCALE
    )
    image.processUnits = [normalization]
    return image


def _labels_file(kind: int) -> "schema.AssociatedFileT":
    labels = schema.AssociatedFileT()
    labels.name = LABELS_FILE
    labels.description = "One label per class, in class index order."
    labels.type = kind
    return labels


def _model_metadata(info: ImageModelInfo, subgraph) -> "schema.ModelMetadataT":
    metadata = schema.ModelMetadataT()
    metadata.name = info.name
    metadata.description = info.description
    metadata.version = info.version
    metadata.author = info.author
    metadata.subgraphMetadata = [subgraph]
    metadata.minParserVersion = min_parser_version(metadata)
    return metadata


def _metadata_object(
    info: ImageClassifierInfo, channels: int, quantization: str = ""
) -> "schema.ModelMetadataT":
    scores = schema.TensorMetadataT()
    scores.name = info.output
    scores.description = (
        f"Probabilities of the {len(info.labels)} classes (softmax applied)."
        if info.output == "probabilities"
        else f"Logits of the {len(info.labels)} classes (apply softmax for probabilities)."
    )
    scores.content = schema.ContentT()
    scores.content.contentPropertiesType = schema.ContentProperties.FeatureProperties
    scores.content.contentProperties = schema.FeaturePropertiesT()
    if info.output == "probabilities":
        scores.stats = schema.StatsT()
        scores.stats.min, scores.stats.max = [0.0], [1.0]
    scores.associatedFiles = [_labels_file(schema.AssociatedFileType.TENSOR_AXIS_LABELS)]

    subgraph = schema.SubGraphMetadataT()
    subgraph.name = "image_classifier"
    subgraph.inputTensorMetadata = [_image_tensor(info, channels, quantization)]
    subgraph.outputTensorMetadata = [scores]
    return _model_metadata(info, subgraph)


def min_parser_version(metadata: "schema.ModelMetadataT") -> str:
    """The oldest metadata parser that understands every field `metadata` populates, by the
    "Added in" versions of schema 1.5.0."""
    versions = [_BASE_PARSER_VERSION]
    files = list(metadata.associatedFiles or [])
    for subgraph in metadata.subgraphMetadata or []:
        files += subgraph.associatedFiles or []
        tensors = (subgraph.inputTensorMetadata or []) + (subgraph.outputTensorMetadata or [])
        for tensor in tensors:
            files += tensor.associatedFiles or []
            content = tensor.content
            if (
                content
                and content.contentPropertiesType == schema.ContentProperties.AudioProperties
            ):
                versions.append((1, 3, 0))
            units = tensor.processUnits or []
            versions += [_unit_version(u) for u in units]
        if subgraph.inputProcessUnits or subgraph.outputProcessUnits:
            versions.append((1, 1, 0))
            versions += [
                _unit_version(u)
                for u in (subgraph.inputProcessUnits or []) + (subgraph.outputProcessUnits or [])
            ]
        if subgraph.inputTensorGroups or subgraph.outputTensorGroups:
            versions.append((1, 2, 0))
        if subgraph.customMetadata:
            versions.append((1, 5, 0))
    for associated in files:
        if associated.type == schema.AssociatedFileType.VOCABULARY:
            versions.append((1, 0, 1))
        if associated.type == schema.AssociatedFileType.SCANN_INDEX_FILE:
            versions.append((1, 4, 0))
        if associated.version:
            versions.append((1, 4, 1))
    return ".".join(str(part) for part in max(versions))


def _unit_version(unit) -> tuple[int, int, int]:
    options = schema.ProcessUnitOptions
    return {
        options.BertTokenizerOptions: (1, 1, 0),
        options.SentencePieceTokenizerOptions: (1, 1, 0),
        options.RegexTokenizerOptions: (1, 2, 1),
    }.get(unit.optionsType, _BASE_PARSER_VERSION)


def write_image_classifier(model: bytes, info: ImageClassifierInfo) -> bytes:
    """`model` with `info` as its metadata and the labels as its associated file.

    Metadata already in `model` is replaced, not duplicated.

    Raises:
        ValueError: the input is not one image tensor, or the labels do not match the output.
    """
    flat, _ = _split(bytes(model))
    model_object = flatbuffer_utils.read_model_from_bytearray(bytearray(flat))
    shape = _image_input(model_object)
    classes = _output_classes(model_object)
    if classes != len(info.labels):
        raise ValueError(
            f"The model outputs {classes} classes but {len(info.labels)} labels were given."
        )
    if len(info.mean) != shape[-1]:
        raise ValueError(
            f"The input has {shape[-1]} channel(s) but the normalization has "
            f"{len(info.mean)} value(s)."
        )
    content = _metadata_object(info, shape[-1], _input_quantization(model_object))
    return _embed(model_object, content, info.labels)


def _embed(model_object, content: "schema.ModelMetadataT", labels: Sequence[str]) -> bytes:
    """The model with `content` as its metadata (replacing any there) and the label file."""
    builder = schema.flatbuffers.Builder(1024)
    builder.Finish(content.Pack(builder), file_identifier=b"M001")
    payload = np.frombuffer(bytes(builder.Output()), np.uint8)

    existing = [m for m in (model_object.metadata or []) if _name(m.name) == METADATA_NAME]
    if existing:
        model_object.buffers[existing[0].buffer].data = payload
        for duplicate in existing[1:]:
            model_object.metadata.remove(duplicate)
    else:
        buffer = type(model_object.buffers[0])()
        buffer.data = payload
        model_object.buffers.append(buffer)
        entry = flatbuffer_utils.schema_fb.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model_object.buffers) - 1
        model_object.metadata = (model_object.metadata or []) + [entry]
    out = io.BytesIO()
    out.write(bytes(flatbuffer_utils.convert_object_to_bytearray(model_object)))
    # Appending to bytes that are not a zip starts a new archive after them. A fixed date:
    # the same model and labels give the same file (and sha256) whenever it is exported.
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        entry = zipfile.ZipInfo(LABELS_FILE, date_time=(1980, 1, 1, 0, 0, 0))
        archive.writestr(entry, "\n".join(labels) + "\n")
    return out.getvalue()


# The four outputs of TFLite's detection post-processing op, as MediaPipe's ObjectDetector
# names them, in the order of their tensor indices (the op's output ports).
DETECTOR_OUTPUTS = ("location", "category", "score", "number of detections")


def write_object_detector(model: bytes, info: ImageModelInfo) -> bytes:
    """`model`, ending in the `TFLite_Detection_PostProcess` op, with the metadata MediaPipe's
    `ObjectDetector` requires: the input normalisation, boxes as [top, left, bottom, right]
    ratios, class indices named by the label file, scores, and the detection count.

    Raises:
        ValueError: the input is not one image tensor, or the model has not the op's four
            outputs.
    """
    flat, _ = _split(bytes(model))
    model_object = flatbuffer_utils.read_model_from_bytearray(bytearray(flat))
    shape = _image_input(model_object)
    outputs = [int(i) for i in model_object.subgraphs[0].outputs]
    if len(outputs) != len(DETECTOR_OUTPUTS):
        raise ValueError(
            f"An object detector ends in TFLite_Detection_PostProcess's {len(DETECTOR_OUTPUTS)} "
            f"outputs; this model has {len(outputs)}."
        )
    if len(info.mean) != shape[-1]:
        raise ValueError(
            f"The input has {shape[-1]} channel(s) but the normalization has "
            f"{len(info.mean)} value(s)."
        )
    ranged = schema.ValueRangeT()
    ranged.min = ranged.max = 2  # the axis of the detections in a [1, N, ...] output
    tensors = {}
    for name in DETECTOR_OUTPUTS:
        tensor = schema.TensorMetadataT()
        tensor.name = name
        tensor.content = schema.ContentT()
        tensor.content.contentPropertiesType = schema.ContentProperties.FeatureProperties
        tensor.content.contentProperties = schema.FeaturePropertiesT()
        if name != "number of detections":
            tensor.content.range = ranged
        tensors[name] = tensor
    box = schema.BoundingBoxPropertiesT()
    box.index = [1, 0, 3, 2]  # the op writes [top, left, bottom, right]
    box.type = schema.BoundingBoxType.BOUNDARIES
    box.coordinateType = schema.CoordinateType.RATIO
    tensors[
        "location"
    ].content.contentPropertiesType = schema.ContentProperties.BoundingBoxProperties
    tensors["location"].content.contentProperties = box
    tensors["category"].associatedFiles = [
        _labels_file(schema.AssociatedFileType.TENSOR_VALUE_LABELS)
    ]
    by_index = dict(zip(sorted(outputs), (tensors[n] for n in DETECTOR_OUTPUTS)))
    group = schema.TensorGroupT()
    group.name = "detection_result"
    group.tensorNames = list(DETECTOR_OUTPUTS[:3])

    subgraph = schema.SubGraphMetadataT()
    subgraph.name = "object_detector"
    subgraph.inputTensorMetadata = [
        _image_tensor(info, shape[-1], _input_quantization(model_object))
    ]
    subgraph.outputTensorMetadata = [by_index[i] for i in outputs]
    subgraph.outputTensorGroups = [group]
    return _embed(model_object, _model_metadata(info, subgraph), info.labels)


def _name(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read(model: bytes) -> dict | None:
    """The metadata of `model` as a plain dict, or None when it has none."""
    flat, files = _split(bytes(model))
    model_object = flatbuffer_utils.read_model_from_bytearray(bytearray(flat))
    entries = [m for m in (model_object.metadata or []) if _name(m.name) == METADATA_NAME]
    if not entries:
        return None
    payload = bytes(np.asarray(model_object.buffers[entries[0].buffer].data, np.uint8))
    if not schema.ModelMetadata.ModelMetadataBufferHasIdentifier(payload, 0):
        raise ValueError(f"The {METADATA_NAME} buffer is not TFLite metadata (no M001 identifier).")
    metadata = schema.ModelMetadataT.InitFromPackedBuf(payload, 0)

    def tensor(t):
        units = [
            u.options
            for u in t.processUnits or []
            if u.optionsType == schema.ProcessUnitOptions.NormalizationOptions
        ]
        return {
            "name": _name(t.name),
            "description": _name(t.description),
            "normalization": (
                {"mean": [float(v) for v in units[0].mean], "std": [float(v) for v in units[0].std]}
                if units
                else None
            ),
            "associated_files": [
                {"name": _name(f.name), "type": int(f.type)} for f in t.associatedFiles or []
            ],
        }

    subgraph = metadata.subgraphMetadata[0]
    return {
        "name": _name(metadata.name),
        "description": _name(metadata.description),
        "version": _name(metadata.version),
        "author": _name(metadata.author),
        "min_parser_version": _name(metadata.minParserVersion),
        "inputs": [tensor(t) for t in subgraph.inputTensorMetadata or []],
        "outputs": [tensor(t) for t in subgraph.outputTensorMetadata or []],
        "associated_files": {name: data.decode("utf-8", "replace") for name, data in files.items()},
    }
