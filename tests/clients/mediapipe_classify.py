"""Classifies images with MediaPipe Tasks' ImageClassifier, the client Android apps use.

Runs in the MediaPipe virtualenv (scripts/test makes it), never imports tfkd:

    python mediapipe_classify.py IMAGES.npy OUT.json MODEL.tflite [MODEL.tflite ...]

IMAGES.npy holds uint8 RGB images (N, H, W, 3). OUT.json maps each model path to, per image,
every category's index, name and score; or to {"error": message} when MediaPipe refuses the
model. One process for every model: MediaPipe starts once.
"""

import json
import sys

import numpy as np


def classify(model_path: str, images: np.ndarray) -> dict:
    import mediapipe as mp
    from mediapipe.tasks import python as tasks
    from mediapipe.tasks.python import vision

    options = vision.ImageClassifierOptions(
        base_options=tasks.BaseOptions(model_asset_path=model_path), max_results=-1
    )
    try:
        classifier = vision.ImageClassifier.create_from_options(options)
    except (ValueError, RuntimeError) as error:
        result = {"error": str(error)}
    else:
        with classifier:
            result = {"images": []}
            for image in images:
                frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
                categories = classifier.classify(frame).classifications[0].categories
                result["images"].append(
                    [
                        {"index": c.index, "name": c.category_name, "score": c.score}
                        for c in categories
                    ]
                )
    return result


def main(images_path: str, out_path: str, *model_paths: str) -> None:
    images = np.load(images_path)
    results = {path: classify(path, images) for path in model_paths}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
