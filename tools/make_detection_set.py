r"""A detection dataset with exact boxes, built offline from an image-classification folder such
as CIFAR-10 (`SOURCE/<split>/<class>/*.jpg`): each image is a blurred, upscaled photo as the
background with 1 to `--max_objects` object photos pasted at random scales and positions.

    python -m tools.make_detection_set --source=../shared/data/cifar10 --out=/tmp/det \
        --format=coco --classes=cat,dog,bird --train_images=400 --val_images=100

Writes the layout `tfkd.tasks.detection.data` reads (coco:OUT or yolo:OUT). The backgrounds come
from classes that are not objects, so a background never holds an unlabeled object.
"""

import json
import os
import random
import sys

import numpy as np
from absl import app, flags
from PIL import Image, ImageFilter

from tfkd import files
from tfkd.tasks.detection import targets

FLAGS = flags.FLAGS

# Object sides as a share of the image side, and the most two objects may overlap (IoU).
SCALES = (0.2, 0.5)
MAX_OVERLAP = 0.3
_SOURCE_SPLITS = {"train": "train", "val": "test"}


def _photos(folder: str) -> list[str]:
    return sorted(os.path.join(folder, n) for n in os.listdir(folder))


def _compose(rng: random.Random, background: str, objects: list, size: int):
    """One image and its boxes [(x0, y0, x1, y1, class)] from a background photo and
    (path, class) object photos; objects that would overlap more than MAX_OVERLAP are left out."""
    with Image.open(background) as opened:
        canvas = opened.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    canvas = canvas.filter(ImageFilter.GaussianBlur(size / 24))
    boxes: list[tuple[int, int, int, int, int]] = []
    for path, label in objects:
        side = int(size * rng.uniform(*SCALES))
        placed = np.array([b[:4] for b in boxes]).reshape(-1, 4)
        for _ in range(20):
            x, y = rng.randint(0, size - side), rng.randint(0, size - side)
            box = (x, y, x + side, y + side)
            if not boxes or targets.iou(np.array([box]), placed).max() <= MAX_OVERLAP:
                break
        else:
            continue
        with Image.open(path) as opened:
            canvas.paste(
                opened.convert("RGB").resize((side, side), Image.Resampling.BICUBIC), box[:2]
            )
        boxes.append((*box, label))
    return canvas, boxes


def make_detection_set(
    source: str,
    out: str,
    classes: list[str],
    counts: dict[str, int],
    image_size: int = 128,
    max_objects: int = 4,
    layout: str = "coco",
    seed: int = 0,
) -> dict:
    """Writes the dataset; returns how many images and boxes each split holds."""
    rng = random.Random(seed)
    made = {}
    for split, count in counts.items():
        if not count:
            continue
        folder = os.path.join(source, _SOURCE_SPLITS[split])
        present = sorted(os.listdir(folder))
        missing = [c for c in classes if c not in present]
        if missing:
            raise ValueError(f"--classes: {missing} are not folders of {folder}.")
        backgrounds = [
            p for c in present if c not in classes for p in _photos(os.path.join(folder, c))
        ]
        if not backgrounds:
            raise ValueError(
                f"{folder}: every class is an object class; leave one for backgrounds."
            )
        pool = [(p, i) for i, c in enumerate(classes) for p in _photos(os.path.join(folder, c))]
        image_dir = os.path.join(out, split, "images")
        os.makedirs(image_dir)
        images: list[dict] = []
        annotations: list[dict] = []
        for index in range(count):
            objects = rng.sample(pool, rng.randint(1, max_objects))
            canvas, boxes = _compose(rng, rng.choice(backgrounds), objects, image_size)
            name = f"{index:05d}.jpg"
            canvas.save(os.path.join(image_dir, name), quality=95)
            images.append(
                {"id": index + 1, "file_name": name, "width": image_size, "height": image_size}
            )
            annotations += [
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": label + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
                for x0, y0, x1, y1, label in boxes
            ]
            if layout == "yolo":
                lines = [
                    f"{label} {(x0 + x1) / 2 / image_size:.6f} {(y0 + y1) / 2 / image_size:.6f} "
                    f"{(x1 - x0) / image_size:.6f} {(y1 - y0) / image_size:.6f}"
                    for x0, y0, x1, y1, label in boxes
                ]
                files.write_text(
                    os.path.join(out, split, "labels", f"{index:05d}.txt"), "\n".join(lines) + "\n"
                )
        if layout == "coco":
            document = {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)],
            }
            files.write_text(os.path.join(out, split, "annotations.json"), json.dumps(document))
        made[split] = {"images": count, "boxes": len(annotations)}
    if layout == "yolo":
        files.write_text(os.path.join(out, "names.txt"), "\n".join(classes) + "\n")
    return made


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.source or not FLAGS.out:
        raise app.UsageError("--source and --out are required.")
    if os.path.exists(FLAGS.out):
        print(f"error: --out={FLAGS.out} exists; give a new folder.", file=sys.stderr)
        return 2
    try:
        made = make_detection_set(
            FLAGS.source,
            FLAGS.out,
            FLAGS.classes,
            {"train": FLAGS.train_images, "val": FLAGS.val_images},
            FLAGS.image_size,
            FLAGS.max_objects,
            FLAGS.format,
            FLAGS.seed,
        )
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{FLAGS.format}:{FLAGS.out} {json.dumps(made)}")
    return 0


def _define_flags() -> None:
    """Only when run as a program: importers (the tests) have flags of their own."""
    flags.DEFINE_string("source", None, "Classification folder: SOURCE/<split>/<class>/*.jpg.")
    flags.DEFINE_string("out", None, "Where to write the dataset (must not exist).")
    flags.DEFINE_enum("format", "coco", ["coco", "yolo"], "Annotation layout.")
    flags.DEFINE_list("classes", ["cat", "dog", "bird"], "Object classes (folders of SOURCE).")
    flags.DEFINE_integer("train_images", 400, "Training images.", lower_bound=1)
    flags.DEFINE_integer("val_images", 100, "Validation images.", lower_bound=0)
    flags.DEFINE_integer(
        "image_size", 128, "Side of each (square) image in pixels.", lower_bound=32
    )
    flags.DEFINE_integer("max_objects", 4, "Most objects in one image.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of every choice.")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
