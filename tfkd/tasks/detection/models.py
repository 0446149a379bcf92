"""Detectors: a convolutional backbone with feature maps at strides 8 and 16 and an SSD-style
head, one anchor per cell (`tfkd.tasks.detection.export` exports them as they are), their
training on a `DetectionSplit`, and their detections.

A detector takes normalised images and emits `[box_encodings, class_logits]`: (batch, anchors,
4) and (batch, anchors, 1 + classes), the background first.
"""

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from tfkd.data import batching
from tfkd.data.preprocessing import Preprocessing
from tfkd.distill import distribute, training
from tfkd.keras import keras
from tfkd.models import pretrained
from tfkd.tasks.detection import backbones, losses, targets
from tfkd.tasks.detection.data import DetectionSplit
from tfkd.tasks.detection.export import BOX_SCALES, decode, grid_anchors
from tfkd.tasks.detection.metrics import Detections

STRIDES = (8, 16)
# Anchor sides per level, in strides: objects from about 2 to 8 strides wide.
ANCHOR_STRIDES = 4.0
# Background anchors trained on per positive one: the hardest (SSD's hard negative mining).
NEGATIVES_PER_POSITIVE = 3


def available() -> list[str]:
    return backbones.available()


def build(
    name: str, image_size: int, num_classes: int, weights: str | None = None
) -> tuple[keras.Model, np.ndarray]:
    """Detector `name` (`available()`) for square images of `image_size` pixels, and its
    anchors. `weights`: None (random), "imagenet" (the keras.applications backbone's) or an
    `.h5` weights file of the whole detector, matched by layer name."""
    if name not in available():
        raise ValueError(f"{name!r} is not a detector. Available: {available()}")
    if image_size % max(STRIDES):
        raise ValueError(
            f"`image_size` must be a multiple of {max(STRIDES)}. Received: {image_size}"
        )
    inputs = keras.Input((image_size, image_size, 3), name="image")
    levels, width, separable = backbones.features(
        name,
        inputs,
        preprocessing(image_size),
        pretrained.IMAGENET if weights == pretrained.IMAGENET else None,
    )
    boxes, logits = [], []
    for stride in STRIDES:
        cells = (image_size // stride) ** 2
        if separable:  # SSDLite: separable blocks and predictors
            head = backbones.separable(levels[stride], width, f"head{stride}")
            predict = keras.layers.DepthwiseConv2D(3, padding="same", name=f"predict{stride}_dw")
            head, size = predict(head), 1
        else:
            head, size = backbones.conv(levels[stride], width, 1, f"head{stride}"), 3
        box = keras.layers.Conv2D(4, size, padding="same", name=f"box{stride}")(head)
        logit = keras.layers.Conv2D(1 + num_classes, size, padding="same", name=f"class{stride}")(
            head
        )
        boxes.append(keras.layers.Reshape((cells, 4))(box))
        logits.append(keras.layers.Reshape((cells, 1 + num_classes))(logit))
    outputs = [
        keras.layers.Concatenate(axis=1, name="box_encodings")(boxes),
        keras.layers.Concatenate(axis=1, name="class_logits")(logits),
    ]
    model = pretrained.follow_small_data(keras.Model(inputs, outputs, name=name))
    if weights not in (None, pretrained.IMAGENET):
        pretrained.load_weights(model, weights, role=f"detector {name}")
    return model, anchors(image_size)


def preprocessing(image_size: int) -> Preprocessing:
    """How a detector's input is normalised: pixels to [-1, 1], which one uint8 quantization
    expresses, so the int8 file takes the camera's bytes."""
    return Preprocessing((image_size, image_size), 3, 1 / 255, (0.5,) * 3, (0.5,) * 3)


def anchors(image_size: int) -> np.ndarray:
    """The anchors of every detector `build` makes for square images of `image_size` pixels."""
    return grid_anchors(image_size, STRIDES, [s * ANCHOR_STRIDES for s in STRIDES])


def fit(
    trainer: "DetectorTrainer",
    images: np.ndarray,
    targets: tuple[np.ndarray, np.ndarray],
    epochs: int,
    *,
    batch_size: int,
    learning_rate: float,
    optimizer_name: str = training.DEFAULT_OPTIMIZER,
    seed: int = 0,
    callbacks=(),
) -> keras.Model:
    """Trains `trainer` (a `DetectorTrainer` or `DetectionDistiller`) on normalised `images` and
    their `targets` with tfkd's optimizer and cosine schedule (`tfkd.distill.training`); the
    same shuffled batches for every trainer of one `seed`. Returns the trained detector."""
    steps_per_epoch = -(-len(images) // batch_size)
    trainer.compile(
        optimizer=training.optimizer(optimizer_name, learning_rate, epochs * steps_per_epoch)
    )
    examples = tf.data.Dataset.from_tensor_slices((images, targets))
    batches = batching.reshuffled(examples, seed).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    trainer.fit(batches, epochs=epochs, callbacks=list(callbacks), verbose=0)
    return trainer.detector


def images(split: DetectionSplit, image_size: int) -> np.ndarray:
    """The split's images as uint8 (n, size, size, 3), stretched to the square input (boxes as
    ratios are unchanged by it). `ValueError` naming the files that cannot be decoded.

    Pillow decodes them, not `tfkd.data.images.decode_files` as classification's photos: that
    decoder's pixels differ (another JPEG IDCT, resizing without antialiasing), and moving to it
    changed the recipe's int8 results beyond its parity gate on one seed (docs/detection.md)."""
    out = np.zeros((len(split.images), image_size, image_size, 3), np.uint8)
    bad = []
    for i, image in enumerate(split.images):
        try:
            with Image.open(image.path) as opened:
                # Upright, as the boxes are given (data.py): a phone photo's EXIF rotation.
                upright = ImageOps.exif_transpose(opened)
                rgb = upright.convert("RGB").resize(
                    (image_size, image_size), Image.Resampling.BILINEAR
                )
            out[i] = np.asarray(rgb)
        except (OSError, SyntaxError, ValueError):  # what Pillow raises for a broken file
            bad.append(image.path)
    if bad:
        raise ValueError(
            f"{len(bad)} image(s) cannot be decoded, e.g. {bad[:5]}. Fix: delete or re-encode "
            "them (JPEG or PNG) and their annotations."
        )
    return out


def ratio_boxes(image) -> np.ndarray:
    """An annotated image's pixel boxes (x_min, y_min, x_max, y_max) as ratio corners (y_min,
    x_min, y_max, x_max)."""
    x0, y0, x1, y1 = (image.boxes[:, i] for i in range(4))
    return np.stack([y0 / image.height, x0 / image.width, y1 / image.height, x1 / image.width], 1)


def training_targets(split: DetectionSplit, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, encodings = zip(
        *(targets.assign(anchors, ratio_boxes(i), i.classes) for i in split.images)
    )
    return np.stack(labels), np.stack(encodings)


def detection_loss(labels, encodings, box_encodings, class_logits) -> tf.Tensor:
    """SSD's loss per positive anchor: cross-entropy on the positives and on the hardest
    `NEGATIVES_PER_POSITIVE` background anchors per positive, plus a Huber loss on the positives'
    box encodings."""
    labels = tf.cast(labels, tf.int32)
    positive = tf.cast(labels > 0, tf.float32)
    positives = tf.maximum(tf.reduce_sum(positive), 1.0)
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, tf.cast(class_logits, tf.float32)
    )
    negative_loss = tf.where(labels > 0, tf.zeros_like(cross_entropy), cross_entropy)
    kept = tf.cast(tf.reduce_sum(positive, axis=1) * NEGATIVES_PER_POSITIVE, tf.int32)
    ranks = tf.argsort(tf.argsort(negative_loss, direction="DESCENDING"))
    hard_negative = tf.cast(ranks < kept[:, None], tf.float32) * (1.0 - positive)
    classification = tf.reduce_sum(cross_entropy * (positive + hard_negative))
    huber = keras.losses.Huber(reduction="none")(
        tf.cast(encodings, tf.float32)[..., None], tf.cast(box_encodings, tf.float32)[..., None]
    )
    localization = tf.reduce_sum(tf.reduce_sum(huber, axis=-1) * positive)
    return (classification + localization) / positives


def _positives_share(labels: tf.Tensor) -> tf.Tensor:
    """`tfkd.distill.distribute.replica_share` of `detection_loss`, which is normalised by the
    positive anchors (at least one)."""
    return distribute.replica_share(tf.reduce_sum(tf.cast(labels > 0, tf.float32)), at_least=1.0)


class DetectorTrainer(keras.Model):
    """Trains a detector on batches of (images, (class targets, box targets)) with
    `detection_loss`; `detector` is the trained model (the trainer is never saved)."""

    def __init__(self, detector: keras.Model):
        super().__init__()
        self.detector = detector

    def call(self, inputs, training=False):
        return self.detector(inputs, training=training)

    def train_step(self, data):
        inputs, (labels, encodings) = data
        share = _positives_share(labels)
        with tf.GradientTape() as tape:
            box_encodings, class_logits = self.detector(inputs, training=True)
            loss = detection_loss(labels, encodings, box_encodings, class_logits) * share
        # minimize scales the loss when the optimizer is mixed precision's LossScaleOptimizer.
        self.optimizer.minimize(loss, self.detector.trainable_variables, tape=tape)
        return {"loss": loss}


def _decode(encodings: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
    """`export.decode` in TensorFlow, as corners (x_min, y_min, x_max, y_max) for GIoU."""
    scaled = tf.cast(encodings, tf.float32) / tf.constant(BOX_SCALES)
    y = scaled[..., 0] * anchors[:, 2] + anchors[:, 0]
    x = scaled[..., 1] * anchors[:, 3] + anchors[:, 1]
    h = tf.exp(tf.minimum(scaled[..., 2], 10.0)) * anchors[:, 2]
    w = tf.exp(tf.minimum(scaled[..., 3], 10.0)) * anchors[:, 3]
    return tf.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], axis=-1)


class DetectionDistiller(DetectorTrainer):
    """Trains a student detector on the labels and on a frozen teacher detector with the same
    anchors: `student_loss_weight` times `detection_loss`, plus the rest times the teacher's
    terms, dense KD on the class logits of every anchor and 1 - GIoU to the teacher's decoded
    boxes, both weighted by the teacher's foreground probability (1 - its background score).
    """

    def __init__(
        self,
        student: keras.Model,
        teacher: keras.Model,
        anchors: np.ndarray,
        student_loss_weight: float = 0.5,
        temperature: float = 2.0,
    ):
        super().__init__(student)
        if not 0.0 <= student_loss_weight <= 1.0:
            raise ValueError(
                f"`student_loss_weight` must be in [0, 1]. Received: {student_loss_weight}"
            )
        if teacher.outputs[0].shape[1] != len(anchors):
            raise ValueError(
                f"The teacher predicts {teacher.outputs[0].shape[1]} boxes, the student's "
                f"anchors are {len(anchors)}: distillation pairs them one to one."
            )
        self.teacher = teacher
        self.teacher.trainable = False
        self.anchors = tf.constant(np.asarray(anchors, np.float32))
        self.student_loss_weight = student_loss_weight
        self.temperature = temperature

    def train_step(self, data):
        inputs, (labels, encodings) = data
        teacher_boxes, teacher_logits = self.teacher(inputs, training=False)
        foreground = 1.0 - tf.nn.softmax(tf.cast(teacher_logits, tf.float32))[..., 0]
        hard_share = _positives_share(labels)
        # The teacher's terms are means weighted by its foreground probability.
        teacher_share = distribute.replica_share(tf.reduce_sum(foreground))
        with tf.GradientTape() as tape:
            box_encodings, class_logits = self.detector(inputs, training=True)
            hard = detection_loss(labels, encodings, box_encodings, class_logits) * hard_share
            kd = losses.dense_kd(teacher_logits, class_logits, foreground, self.temperature)
            kd *= teacher_share
            boxes = losses.giou_loss(
                _decode(teacher_boxes, self.anchors),
                _decode(box_encodings, self.anchors),
                foreground,
            )
            boxes *= teacher_share
            weight = self.student_loss_weight
            loss = weight * hard + (1.0 - weight) * (kd + boxes)
        # minimize scales the loss when the optimizer is mixed precision's LossScaleOptimizer.
        self.optimizer.minimize(loss, self.detector.trainable_variables, tape=tape)
        return {"loss": loss, "hard": hard, "kd": kd, "giou": boxes}


def detect(
    detector: keras.Model,
    anchors: np.ndarray,
    normalized: np.ndarray,
    sizes: list[tuple[int, int]],
    max_detections: int = 25,
    iou_threshold: float = 0.5,
) -> list[Detections]:
    """Each image's detections, as the exported post-processing finds them (the best class of
    each anchor, class-agnostic NMS), in pixels of its original (width, height) `sizes`."""
    found = []
    box_encodings, class_logits = detector.predict(normalized, verbose=0)
    for encodings, logits, (width, height) in zip(box_encodings, class_logits, sizes):
        scores = tf.nn.softmax(logits).numpy()[:, 1:]
        best, score = scores.argmax(axis=1), scores.max(axis=1)
        boxes = np.clip(decode(encodings, anchors), 0, 1)
        keep = tf.image.non_max_suppression(boxes, score, max_detections, iou_threshold).numpy()
        y0, x0, y1, x1 = (boxes[keep, i] for i in range(4))
        pixels = np.stack([x0 * width, y0 * height, x1 * width, y1 * height], axis=1)
        found.append(Detections(pixels, best[keep], score[keep]))
    return found
