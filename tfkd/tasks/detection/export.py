"""A detector as a `.tflite` file that MediaPipe's `ObjectDetector` runs: the Keras model's dense
box encodings and class scores, then TFLite's detection post-processing op (decoding against the
anchors, non-maximum suppression), with the object-detector metadata.

The model contract: a Keras model taking normalised images and emitting `[box_encodings,
class_logits]`, shaped (batch, anchors, 4) and (batch, anchors, 1 + classes) with the
background first. Encodings are SSD's centre-size code against `anchors` (anchors, 4) =
(y_centre, x_centre, height, width) as ratios of the image, scaled by `BOX_SCALES`.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfkd.data import Preprocessing

# The module, not its names: tfkd.export's conversion imports the tasks (the classifier head).
from tfkd.export import conversion, metadata
from tfkd.keras import keras
from tfkd.measure.runtime import load_interpreter
from tfkd.tasks.detection.metrics import Detections

# The SSD box coder's scales of (y, x, height, width): what the post-processing op undoes.
BOX_SCALES = (10.0, 10.0, 5.0, 5.0)


@dataclasses.dataclass(frozen=True)
class PostProcessing:
    """What the post-processing op keeps: at most `max_detections` boxes scoring at least
    `score_threshold`, overlapping at most `iou_threshold` (class-agnostic fast NMS)."""

    max_detections: int = 25
    score_threshold: float = 1e-4
    iou_threshold: float = 0.5

    def signature(self, num_classes: int) -> str:
        """The op's attributes, as the converter reads them from `experimental_implements`."""
        y, x, h, w = BOX_SCALES
        attributes = {
            "max_detections": f"i: {self.max_detections}",
            "max_classes_per_detection": "i: 1",
            "use_regular_nms": "b: false",
            "nms_score_threshold": f"f: {self.score_threshold:f}",
            "nms_iou_threshold": f"f: {self.iou_threshold:f}",
            "y_scale": f"f: {y:f}",
            "x_scale": f"f: {x:f}",
            "h_scale": f"f: {h:f}",
            "w_scale": f"f: {w:f}",
            "num_classes": f"i: {num_classes}",
        }
        return " ".join(
            ['name: "TFLite_Detection_PostProcess"']
            + [f'attr {{ key: "{k}" value {{ {v} }} }}' for k, v in attributes.items()]
        )


def decode(encodings: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Boxes (..., 4) as ratio corners (y_min, x_min, y_max, x_max) from encodings against
    anchors (y_centre, x_centre, height, width), as the post-processing op decodes them."""
    ty, tx, th, tw = (np.asarray(encodings)[..., i] / s for i, s in enumerate(BOX_SCALES))
    ya, xa, ha, wa = (np.asarray(anchors)[..., i] for i in range(4))
    y, x = ty * ha + ya, tx * wa + xa
    h, w = np.exp(th) * ha, np.exp(tw) * wa
    return np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], axis=-1)


class _Exported(tf.Module):
    """The detector's serving function, for a conversion through a SavedModel (the converter
    finds the post-processing op only there, by the `implements` attribute of a function).

    The module tracks the model's variables, not the model: a tracked Keras model is saved with
    a traced call of every layer, which took 65-80% of a detector's conversion."""

    def __init__(self, model: keras.Model, anchors: np.ndarray, post: PostProcessing):
        super().__init__()
        self.model_variables = list(model.variables)
        anchors = np.asarray(anchors, np.float32)
        num_classes = int(model.outputs[1].shape[-1]) - 1

        def serve(image):
            box_encodings, class_logits = model(image, training=False)

            # TFLite has no TensorFlow twin of the op: the converter replaces this function, by
            # its signature, with the op itself.
            @tf.function(experimental_implements=post.signature(num_classes))
            def post_processing(box_encodings, class_predictions, anchors):
                del box_encodings, class_predictions, anchors
                zero = tf.constant(0.0)
                return zero, zero, zero, zero

            scores = tf.nn.softmax(tf.cast(class_logits, tf.float32))
            # The implementing function's outputs come back in reverse order.
            return post_processing(
                tf.cast(box_encodings, tf.float32), scores, tf.constant(anchors)
            )[::-1]

        shape = [1, *model.inputs[0].shape[1:]]
        self.serve = tf.function(serve, input_signature=[tf.TensorSpec(shape, tf.float32)])


MODES = ("float32", "int8_io_uint8")


def convert(
    model: keras.Model,
    anchors: np.ndarray,
    labels: Sequence[str],
    preprocessing: Preprocessing,
    mode: str = "float32",
    representative: np.ndarray | None = None,
    post: PostProcessing | None = None,
    name: str = "detector",
) -> bytes:
    """`model` as a `.tflite` object detector with its metadata (`labels`: one per class, the
    background aside; the input normalisation of `preprocessing`).

    Modes: `float32`, or `int8_io_uint8`: integer arithmetic calibrated on `representative`
    (normalised images), taking the camera's raw RGB bytes; the post-processing op dequantizes
    its inputs and reports float boxes and scores.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown detector export mode {mode!r}. Choose from {list(MODES)}.")
    anchors = np.asarray(anchors, np.float32)
    if model.outputs[0].shape[1] != len(anchors):
        raise ValueError(
            f"'{model.name}' predicts {model.outputs[0].shape[1]} boxes but {len(anchors)} "
            "anchors were given."
        )
    classes = int(model.outputs[1].shape[-1]) - 1
    if classes != len(labels):
        raise ValueError(
            f"'{model.name}' scores {classes} classes (and the background) but "
            f"{len(labels)} labels were given."
        )
    module = _Exported(model, anchors, post or PostProcessing())
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module
    )
    converter.allow_custom_ops = True  # TFLite_Detection_PostProcess: in LiteRT and MediaPipe
    if mode == "int8_io_uint8":
        if representative is None or not len(representative):
            raise ValueError("int8_io_uint8 calibrates on `representative` images; none given.")
        images = np.asarray(representative, np.float32)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([images[i : i + 1]] for i in range(len(images)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
    content = converter.convert()
    if mode == "int8_io_uint8":
        content = conversion.set_input_quantization(
            content, *conversion.raw_byte_quantization(preprocessing)
        )
    info = metadata.ImageModelInfo(
        name=name,
        description=f"Object detector exported by tfkd ({name}, {mode}).",
        version="1",
        labels=list(labels),
        mean=[m / preprocessing.scale for m in preprocessing.mean],
        std=[s / preprocessing.scale for s in preprocessing.std],
    )
    return metadata.write_object_detector(content, info)


def grid_anchors(image_size: int, strides: Sequence[int], sizes: Sequence[float]) -> np.ndarray:
    """One square anchor per cell of each feature map (stride `strides[i]`, side `sizes[i]`
    pixels), row by row, as (y_centre, x_centre, height, width) ratios of the image."""
    rows = []
    for stride, size in zip(strides, sizes):
        cells = image_size // stride
        centres = (np.arange(cells) + 0.5) / cells
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        side = np.full(cells * cells, size / image_size)
        rows.append(np.stack([ys.ravel(), xs.ravel(), side, side], axis=1))
    return np.concatenate(rows).astype(np.float32)


def run_tflite(
    path: str, images: np.ndarray, preprocessing: Preprocessing, sizes: Sequence[tuple[int, int]]
) -> list[Detections]:
    """The detections of an exported detector on uint8 `images` (n, size, size, 3) with LiteRT,
    each in pixels of its original (width, height) `sizes` (`metrics.Detections`): a float
    input is fed the normalised image, a uint8 one the raw bytes, as apps do."""
    interpreter = load_interpreter(path)
    detail = interpreter.get_input_details()[0]
    ports = sorted(interpreter.get_output_details(), key=lambda d: d["index"])
    found = []
    for image, (width, height) in zip(images, sizes):
        batch = image[None] if detail["dtype"] == np.uint8 else preprocessing.normalize(image[None])
        interpreter.set_tensor(detail["index"], np.asarray(batch, detail["dtype"]))
        interpreter.invoke()
        boxes, classes, scores, count = (interpreter.get_tensor(p["index"])[0] for p in ports)
        n = int(count)
        y0, x0, y1, x1 = (np.clip(boxes[:n, i], 0, 1) for i in range(4))
        pixels = np.stack([x0 * width, y0 * height, x1 * width, y1 * height], axis=1)
        found.append(Detections(pixels, classes[:n].astype(np.int64), scores[:n]))
    return found
