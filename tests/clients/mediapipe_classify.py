"""Classifies images with MediaPipe Tasks' ImageClassifier, the client Android apps use.

Runs in the MediaPipe virtualenv (scripts/test makes it), never imports tfkd:

    python mediapipe_classify.py MODEL.tflite IMAGES.npy OUT.json

IMAGES.npy holds uint8 RGB images (N, H, W, 3). OUT.json gets, per image, every category's
index, name and score; or {"error": message} when MediaPipe refuses the model.
"""

import json
import sys

import numpy as np


def main(model_path: str, images_path: str, out_path: str) -> None:
    import mediapipe as mp
    from mediapipe.tasks import python as tasks
    from mediapipe.tasks.python import vision

    images = np.load(images_path)
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
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
