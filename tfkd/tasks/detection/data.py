"""Detection datasets: COCO JSON (`coco:PATH`) and YOLO text files (`yolo:PATH`), read into one
form and checked before anything trains.

A dataset root holds `train/` and optionally `val/`, each in one of the two layouts:

    coco:ROOT  ROOT/<split>/annotations.json, ROOT/<split>/images/<file_name>
    yolo:ROOT  ROOT/<split>/images/<stem>.<ext>, ROOT/<split>/labels/<stem>.txt
               (one `class cx cy w h` line per box, normalised to [0, 1]),
               ROOT/names.txt (one class name per line; classes.txt and obj.names also work)

Boxes are kept as pixel corners `(x_min, y_min, x_max, y_max)` of the image as displayed (EXIF
orientation applied). A problem that makes labels wrong (a box outside its image, an unknown
class, an unreadable or empty file, a malformed line) is a `ValueError` naming the file; an
image without boxes is kept as background and counted (`DetectionSplit.warnings`).
"""

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from tfkd.data import images as images_lib

FORMATS = ("coco", "yolo")
SPLITS = ("train", "val")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
NAMES_FILES = ("names.txt", "classes.txt", "obj.names")
COCO_ANNOTATIONS = "annotations.json"
# Boxes may overhang their image by this many pixels (rounding in annotation tools).
TOLERANCE_PIXELS = 1.0


@dataclasses.dataclass(frozen=True)
class AnnotatedImage:
    """One image and its boxes: `boxes` (n, 4) float32 pixel corners x_min, y_min, x_max, y_max;
    `classes` (n,) int64 indices into the split's class names."""

    path: str
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray


@dataclasses.dataclass(frozen=True)
class DetectionSplit:
    """The images of one split, the class names, and the problems counted but not refused."""

    images: tuple[AnnotatedImage, ...]
    class_names: tuple[str, ...]
    warnings: dict = dataclasses.field(default_factory=dict)

    @property
    def boxes(self) -> int:
        return sum(len(image.classes) for image in self.images)


def parse(spec: str) -> tuple[str, str]:
    """`coco:PATH` or `yolo:PATH` as (format, root); `ValueError` for anything else."""
    kind, _, root = spec.partition(":")
    if kind not in FORMATS or not root:
        raise ValueError(
            f"{spec!r} is not a detection dataset. Give coco:PATH (COCO JSON) or yolo:PATH "
            "(YOLO text labels)."
        )
    return kind, root


def load(spec: str) -> dict[str, DetectionSplit]:
    """Every split found under the root of `spec` (`train`, and `val` when present)."""
    kind, root = parse(spec)
    if not os.path.isdir(os.path.join(root, "train")):
        raise ValueError(f"{spec}: no train/ folder in {root} (layout: tfkd.tasks.detection.data).")
    read = _read_coco if kind == "coco" else _read_yolo
    splits = {
        s: read(os.path.join(root, s), root) for s in SPLITS if os.path.isdir(os.path.join(root, s))
    }
    names = {s: split.class_names for s, split in splits.items()}
    if len(set(names.values())) > 1:
        raise ValueError(f"{spec}: the splits name different classes: {names}.")
    return splits


def split_off(
    split: DetectionSplit, fraction: float, seed: int
) -> tuple[DetectionSplit, DetectionSplit]:
    """`split` as (the rest, a held-out `fraction` of its images drawn with `seed`): the
    validation images of a dataset whose `val/` is its test set. At least one image each."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"`fraction` must be in (0, 1). Received: {fraction}")
    count = len(split.images)
    if count < 2:
        raise ValueError(
            f"{count} training image(s): at least 2 are needed to hold some out for validation."
        )
    held = min(count - 1, max(1, round(fraction * count)))
    order = np.random.default_rng(seed).permutation(count)
    chosen = set(order[:held].tolist())
    rest = tuple(im for i, im in enumerate(split.images) if i not in chosen)
    held_out = tuple(im for i, im in enumerate(split.images) if i in chosen)
    return dataclasses.replace(split, images=rest), DetectionSplit(held_out, split.class_names)


def _sizes(paths: Sequence[str]) -> list[tuple[int, int]]:
    """(width, height) of each image as displayed; `ValueError` naming an empty or unreadable
    file."""
    sizes = []
    for path, header in zip(paths, images_lib.read_headers(paths)):
        if not os.path.exists(path):
            raise ValueError(f"{path} is listed but does not exist.")
        if os.path.getsize(path) == 0:
            raise ValueError(f"{path} is empty (0 bytes). Remove it or replace it.")
        if not header.width:
            raise ValueError(f"{path} is not an image Pillow can read. Remove it or replace it.")
        height, width = header.upright_size
        sizes.append((width, height))
    return sizes


def _check_boxes(path: str, boxes: np.ndarray, width: int, height: int) -> None:
    if not len(boxes):
        return
    x0, y0, x1, y1 = boxes.T
    outside = (
        (x0 < -TOLERANCE_PIXELS)
        | (y0 < -TOLERANCE_PIXELS)
        | (x1 > width + TOLERANCE_PIXELS)
        | (y1 > height + TOLERANCE_PIXELS)
    )
    if outside.any():
        box = [round(float(v), 1) for v in boxes[np.argmax(outside)]]
        raise ValueError(
            f"{path}: {int(outside.sum())} box(es) lie outside the {width}x{height} image, e.g. "
            f"{box} (x_min, y_min, x_max, y_max). Fix the labels."
        )
    empty = (x1 <= x0) | (y1 <= y0)
    if empty.any():
        box = [round(float(v), 1) for v in boxes[np.argmax(empty)]]
        raise ValueError(f"{path}: a box has no area: {box}. Fix or remove it.")


def _clipped(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)


def _split(images: list, names: Sequence[str], without: int) -> DetectionSplit:
    warnings = {"images without boxes (kept as background)": without} if without else {}
    return DetectionSplit(tuple(images), tuple(names), warnings)


def _read_coco(folder: str, root: str) -> DetectionSplit:
    del root  # a COCO split names its own categories
    path = os.path.join(folder, COCO_ANNOTATIONS)
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError as error:
        raise ValueError(f"{folder}: no {COCO_ANNOTATIONS} (COCO layout).") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from error
    categories = sorted(document.get("categories", []), key=lambda c: c["id"])
    if not categories:
        raise ValueError(f"{path} lists no categories.")
    index = {c["id"]: i for i, c in enumerate(categories)}
    listed = {image["id"]: image for image in document.get("images", [])}
    if not listed:
        raise ValueError(f"{path} lists no images.")
    boxes: dict = {image_id: [] for image_id in listed}
    for annotation in document.get("annotations", []):
        image_id, category = annotation.get("image_id"), annotation.get("category_id")
        if image_id not in listed:
            raise ValueError(f"{path}: an annotation refers to image id {image_id}, not listed.")
        if category not in index:
            raise ValueError(
                f"{path}: an annotation of {listed[image_id]['file_name']} has category id "
                f"{category}, not among the categories {sorted(index)}."
            )
        x, y, w, h = (float(v) for v in annotation["bbox"])
        boxes[image_id].append((x, y, x + w, y + h, index[category]))
    paths = [os.path.join(folder, "images", listed[i]["file_name"]) for i in listed]
    images, without = [], 0
    for (image_id, entry), path, (width, height) in zip(listed.items(), paths, _sizes(paths)):
        if (entry.get("width"), entry.get("height")) not in ((width, height), (None, None)):
            raise ValueError(
                f"{path} is {width}x{height} but {COCO_ANNOTATIONS} says "
                f"{entry.get('width')}x{entry.get('height')}: the boxes may be for another image."
            )
        rows = np.array(boxes[image_id], np.float32).reshape(-1, 5)
        _check_boxes(path, rows[:, :4], width, height)
        without += not len(rows)
        images.append(
            AnnotatedImage(
                path,
                width,
                height,
                _clipped(rows[:, :4], width, height),
                rows[:, 4].astype(np.int64),
            )
        )
    return _split(images, [c["name"] for c in categories], without)


def _names(root: str) -> list[str]:
    for name in NAMES_FILES:
        path = os.path.join(root, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                names = [line.strip() for line in handle if line.strip()]
            if not names:
                raise ValueError(f"{path} is empty: it should name one class per line.")
            return names
    raise ValueError(f"{root}: no class names file ({' or '.join(NAMES_FILES)}, one per line).")


def _read_label_file(path: str, classes: int) -> np.ndarray:
    """Rows of `class cx cy w h` (normalised) from a YOLO label file."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                if len(fields) != 5:
                    raise ValueError
                values = [float(v) for v in fields]
            except ValueError:
                raise ValueError(
                    f"{path}:{number}: expected `class cx cy w h`, got {line.strip()!r}."
                ) from None
            if not values[0].is_integer() or not 0 <= values[0] < classes:
                raise ValueError(
                    f"{path}:{number}: class {fields[0]} is not one of the {classes} names."
                )
            rows.append(values)
    return np.array(rows, np.float32).reshape(-1, 5)


def _read_yolo(folder: str, root: str) -> DetectionSplit:
    names = _names(root)
    image_dir, label_dir = os.path.join(folder, "images"), os.path.join(folder, "labels")
    if not os.path.isdir(image_dir):
        raise ValueError(f"{folder}: no images/ folder (YOLO layout).")
    paths = sorted(
        os.path.join(image_dir, n)
        for n in os.listdir(image_dir)
        if n.lower().endswith(IMAGE_SUFFIXES)
    )
    if not paths:
        raise ValueError(f"{image_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    images, without = [], 0
    for path, (width, height) in zip(paths, _sizes(paths)):
        stem = os.path.splitext(os.path.basename(path))[0]
        label = os.path.join(label_dir, f"{stem}.txt")
        rows = _read_label_file(label, len(names)) if os.path.exists(label) else np.zeros((0, 5))
        cx, cy, w, h = (rows[:, i] for i in range(1, 5))
        corners = np.stack(
            [
                (cx - w / 2) * width,
                (cy - h / 2) * height,
                (cx + w / 2) * width,
                (cy + h / 2) * height,
            ],
            axis=1,
        ).astype(np.float32)
        _check_boxes(label, corners, width, height)
        without += not len(rows)
        images.append(
            AnnotatedImage(
                path, width, height, _clipped(corners, width, height), rows[:, 0].astype(np.int64)
            )
        )
    return _split(images, names, without)
