r"""Copies a run's exported model, labels and model card into the android_demo app's assets.

    python -m tools.android_export --run=runs/digits
    cd android_demo && ./gradlew installDebug

Picks the variant the app prefers (integer I/O, QAD over PTQ) unless --variant names one, and
bundles a sample image: --sample=PNG, or the first test image of the run's dataset.
"""

import json
import os
import shutil
import sys

import numpy as np
import tensorflow as tf
from absl import app, flags

import tfkd
from pipelines.run import RunLayout
from tfkd import export, files

# The app picks the first of these it finds bundled (ModelCard.PREFERENCE in the Java core).
PREFERENCE = (
    "student_qad_int8_io_uint8",
    "student_int8_io_uint8",
    "student_qad_int8_io_int8",
    "student_int8_io_int8",
    "student_qad_int8",
    "student_int8",
    "student_dynamic",
    "student_float16",
    "student_float32",
)
SAMPLE = "sample.png"


def choose_variant(card: dict, variant: str | None = None) -> str:
    """`variant` if the card has it, else the app's preferred exported student variant."""
    variants = card["variants"]
    if variant is not None:
        if variant not in variants:
            raise ValueError(
                f"The run exported no variant '{variant}'. Its variants: {sorted(variants)}"
            )
        return variant
    for name in PREFERENCE:
        if name in variants:
            return name
    raise ValueError(f"The run exported no student variant the app can run: {sorted(variants)}")


def export_assets(
    tflite_dir: str, assets_dir: str, variant: str | None = None, sample: np.ndarray | None = None
) -> str:
    """Copies one variant with labels and card into `assets_dir`; returns the variant's name.

    Other `.tflite` files already in `assets_dir` are removed, so the app never runs a model from
    an earlier run. `sample` (raw HWC uint8 pixels, as the dataset stores them) becomes the
    app's bundled sample image.
    """
    card = export.read_card(tflite_dir)
    name = choose_variant(card, variant)
    os.makedirs(assets_dir, exist_ok=True)
    for stale in os.listdir(assets_dir):
        if stale.endswith(".tflite"):
            os.remove(os.path.join(assets_dir, stale))
    for file_name in (card["variants"][name]["file"], card["labels_file"], export.CARD_FILE):
        with files.atomic_path(os.path.join(assets_dir, file_name)) as tmp:
            shutil.copyfile(os.path.join(tflite_dir, file_name), tmp)
    if sample is not None:
        image = np.asarray(sample)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
            raise ValueError(
                f"The sample must be HWC uint8 with 1 or 3 channels; got "
                f"{image.dtype} {image.shape}."
            )
        with files.atomic_path(os.path.join(assets_dir, SAMPLE)) as tmp:
            tf.io.write_file(tmp, tf.io.encode_png(image))
    return name


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("run", None, "Run directory of pipelines/distill.py.")
flags.DEFINE_string(
    "assets",
    os.path.join(ROOT, "android_demo", "app", "src", "main", "assets"),
    "The app's assets directory.",
)
flags.DEFINE_string("variant", None, "Variant to bundle (default: the app's preference).")
flags.DEFINE_string("sample", None, "PNG/JPEG sample image (default: the first test image).")


def _sample():
    if FLAGS.sample:
        return tf.io.decode_image(tf.io.read_file(FLAGS.sample), expand_animations=False).numpy()
    with open(RunLayout(FLAGS.run).file(RunLayout.CONFIG), encoding="utf-8") as handle:
        config = json.load(handle)
    splits = tfkd.data.load(
        config["dataset"],
        data_dir=config.get("data_dir"),
        seed=config["seed"],
        image_size=config.get("image_size") or None,
        resize=config.get("resize", "stretch"),
    )
    image, _ = next(iter(splits.test))
    return image.numpy()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.run:
        raise app.UsageError("--run is required.")
    try:
        name = export_assets(
            RunLayout(FLAGS.run).export_dir(), FLAGS.assets, FLAGS.variant, _sample()
        )
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"Bundled {name} into {FLAGS.assets}; build with: cd android_demo && ./gradlew installDebug"
    )
    return 0


if __name__ == "__main__":
    app.run(main)
