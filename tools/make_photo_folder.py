"""Builds a photo-like image folder from a small-image folder (e.g. CIFAR-10 JPEGs).

Each image is upscaled to a random size (long side between --min_side and --max_side, a
phone-like aspect ratio), saved as a JPEG at phone quality, and a share of them is stored
rotated with an EXIF orientation tag that says how to turn it back (as phones do), so a loader
that ignores the tag sees the picture on its side. The result has train/ and val/ folders:

    python -m tools.make_photo_folder --source=../shared/data/cifar10 --out=/tmp/photos \
        --classes=airplane,bird,cat,deer,ship --train_per_class=600 --val_per_class=140
"""

import os
import random
from collections.abc import Sequence

from absl import app, flags

# EXIF orientation -> the PIL transpose that stores an upright picture so that the tag turns
# it back: 6 means "rotate 90 clockwise to display", so the stored pixels are turned the other
# way.
_STORED_AS = {3: "ROTATE_180", 6: "ROTATE_90", 8: "ROTATE_270"}
_ASPECTS = ((4, 3), (3, 4), (1, 1), (16, 9), (9, 16))


def _files(folder: str, limit: int, rng: random.Random) -> list[str]:
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg", ".png")))
    rng.shuffle(names)
    return [os.path.join(folder, n) for n in names[:limit]]


def make_photo_folder(
    source: str,
    out: str,
    classes: Sequence[str] | None = None,
    train_per_class: int = 600,
    val_per_class: int = 140,
    min_side: int = 150,
    max_side: int = 500,
    rotated_fraction: float = 0.2,
    seed: int = 0,
) -> dict:
    """Writes `out/{train,val}/<class>/*.jpg` from `source/{train,test}/<class>/`; returns the
    counts written and how many carry an EXIF rotation."""
    from PIL import Image  # noqa: PLC0415

    rng = random.Random(seed)
    classes = list(classes or sorted(os.listdir(os.path.join(source, "train"))))
    counts = {"images": 0, "rotated": 0}
    for split, source_split, limit in (
        ("train", "train", train_per_class),
        ("val", "test", val_per_class),
    ):
        for name in classes:
            target = os.path.join(out, split, name)
            os.makedirs(target, exist_ok=True)
            for path in _files(os.path.join(source, source_split, name), limit, rng):
                with Image.open(path) as opened:
                    small = opened.convert("RGB")
                long_side = rng.randint(min_side, max_side)
                a, b = rng.choice(_ASPECTS)
                width, height = (
                    (long_side, long_side * b // a) if a >= b else (long_side * a // b, long_side)
                )
                photo = small.resize((width, height), Image.Resampling.BICUBIC)
                exif = Image.Exif()
                if rng.random() < rotated_fraction:
                    orientation = rng.choice(sorted(_STORED_AS))
                    photo = photo.transpose(getattr(Image.Transpose, _STORED_AS[orientation]))
                    exif[0x0112] = orientation
                    counts["rotated"] += 1
                stem = os.path.splitext(os.path.basename(path))[0]
                photo.save(
                    os.path.join(target, f"{stem}.jpg"), "JPEG", quality=90, exif=exif.tobytes()
                )
                counts["images"] += 1
    return counts


def main(argv):
    del argv
    counts = make_photo_folder(
        FLAGS.source,
        FLAGS.out,
        FLAGS.classes,
        FLAGS.train_per_class,
        FLAGS.val_per_class,
        FLAGS.min_side,
        FLAGS.max_side,
        FLAGS.rotated_fraction,
        FLAGS.seed,
    )
    print(
        f"Wrote {counts['images']} images ({counts['rotated']} with an EXIF rotation) to "
        f"{FLAGS.out}"
    )


def _define_flags() -> None:
    """Only when run as a program: importers (benchmarks/photos.py) have flags of their own."""
    flags.DEFINE_string("source", None, "Folder with train/<class>/ and test/<class>/ images.")
    flags.DEFINE_string("out", None, "Folder to write train/ and val/ into.")
    flags.DEFINE_list("classes", [], "Classes to take (default: all).")
    flags.DEFINE_integer("train_per_class", 600, "Training images per class.")
    flags.DEFINE_integer("val_per_class", 140, "Validation images per class (from test/).")
    flags.DEFINE_integer("min_side", 150, "Smallest long side, pixels.")
    flags.DEFINE_integer("max_side", 500, "Largest long side, pixels.")
    flags.DEFINE_float("rotated_fraction", 0.2, "Share stored rotated with an EXIF tag.")
    flags.DEFINE_integer("seed", 0, "Seed of the choices.")
    flags.mark_flags_as_required(["source", "out"])


FLAGS = flags.FLAGS

if __name__ == "__main__":
    _define_flags()
    app.run(main)
