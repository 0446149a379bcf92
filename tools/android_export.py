r"""Copies a run's exported model, labels and model card into the android_demo app's assets.

    python tools/android_export.py --run=runs/digits
    cd android_demo && ./gradlew installDebug

Picks the variant the app prefers (integer I/O, QAD over PTQ) unless --variant names one, and
bundles a sample image: --sample=PNG, or the first test image of the run's dataset.
"""

import json
import os
import sys

from absl import app, flags

import tfkd
from tfkd import android_assets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("run", None, "Run directory of pipelines/distill.py.")
flags.DEFINE_string("assets", os.path.join(ROOT, "android_demo", "app", "src", "main", "assets"),
                    "The app's assets directory.")
flags.DEFINE_string("variant", None, "Variant to bundle (default: the app's preference).")
flags.DEFINE_string("sample", None, "PNG/JPEG sample image (default: the first test image).")


def _sample():
    import tensorflow as tf

    if FLAGS.sample:
        return tf.io.decode_image(tf.io.read_file(FLAGS.sample), expand_animations=False).numpy()
    with open(os.path.join(FLAGS.run, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    splits = tfkd.data.load(config["dataset"], data_dir=config.get("data_dir"),
                            seed=config["seed"])
    image, _ = next(iter(splits.test))
    return image.numpy()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.run:
        raise app.UsageError("--run is required.")
    try:
        name = android_assets.export_assets(os.path.join(FLAGS.run, "tflite"), FLAGS.assets,
                                            FLAGS.variant, _sample())
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Bundled {name} into {FLAGS.assets}; build with: cd android_demo && "
          "./gradlew installDebug")
    return 0


if __name__ == "__main__":
    app.run(main)
