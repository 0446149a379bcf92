"""What each anchor should predict for an image's boxes (SSD's matching): the class of the box it
overlaps most when that overlap reaches `POSITIVE_IOU` (and every box keeps at least its best
anchor), the background otherwise, and the box's encoding against the anchor.

Anchors are (y_centre, x_centre, height, width) ratios; boxes are ratio corners (y_min, x_min,
y_max, x_max), as `tfkd.tasks.detection.export` decodes them. Class targets count the
background as 0 and the dataset's classes from 1.
"""

import numpy as np

from tfkd.tasks.detection.export import BOX_SCALES

POSITIVE_IOU = 0.5


def corners(anchors: np.ndarray) -> np.ndarray:
    """Anchors (y_centre, x_centre, height, width) as corners (y_min, x_min, y_max, x_max)."""
    y, x, h, w = (np.asarray(anchors, np.float64)[:, i] for i in range(4))
    return np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (len(a), len(b)) of corner boxes."""
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    height = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    width = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = height * width
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-12)


def encode(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Corner boxes as SSD encodings against anchors, row by row (what `export.decode` undoes)."""
    boxes, anchors = np.asarray(boxes, np.float64), np.asarray(anchors, np.float64)
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    y, x = boxes[:, 0] + h / 2, boxes[:, 1] + w / 2
    ya, xa, ha, wa = (anchors[:, i] for i in range(4))
    encoded = np.stack([(y - ya) / ha, (x - xa) / wa, np.log(h / ha), np.log(w / wa)], axis=1)
    return (encoded * np.array(BOX_SCALES)).astype(np.float32)


def assign(
    anchors: np.ndarray, boxes: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(class targets (anchors,) int64, box targets (anchors, 4) float32) for one image's
    `boxes` (ratio corners) of `classes` (0-based). Box targets of background anchors are 0."""
    labels = np.zeros(len(anchors), np.int64)
    encodings = np.zeros((len(anchors), 4), np.float32)
    if not len(boxes):
        return labels, encodings
    overlaps = iou(corners(anchors), boxes)
    best_box = overlaps.argmax(axis=1)
    positive = overlaps.max(axis=1) >= POSITIVE_IOU
    # Every box keeps its best anchor, even below the threshold (small or odd-shaped boxes).
    best_anchor = overlaps.argmax(axis=0)
    best_box[best_anchor] = np.arange(len(boxes))
    positive[best_anchor] = True
    labels[positive] = np.asarray(classes)[best_box[positive]] + 1
    encodings[positive] = encode(np.asarray(boxes)[best_box[positive]], anchors[positive])
    return labels, encodings
