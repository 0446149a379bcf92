"""Detects objects with MediaPipe Tasks' ObjectDetector, the client Android apps use.

Runs in the MediaPipe virtualenv (scripts/test makes it), never imports tfkd:

    python mediapipe_detect.py MODEL.tflite IMAGES.npy OUT.json

IMAGES.npy holds uint8 RGB images (N, H, W, 3). OUT.json gets, per image, every detection's
pixel box (x, y, width, height) and its categories' index, name and score; or {"error": message}
when MediaPipe refuses the model.
"""

import json
import sys

import numpy as np


def main(model_path: str, images_path: str, out_path: str) -> None:
    import mediapipe as mp
    from mediapipe.tasks import python as tasks
    from mediapipe.tasks.python import vision

    images = np.load(images_path)
    options = vision.ObjectDetectorOptions(
        base_options=tasks.BaseOptions(model_asset_path=model_path),
        max_results=-1,
        score_threshold=0.0,
    )
    try:
        detector = vision.ObjectDetector.create_from_options(options)
    except (ValueError, RuntimeError) as error:
        result = {"error": str(error)}
    else:
        with detector:
            result = {"images": []}
            for image in images:
                frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
                result["images"].append(
                    [
                        {
                            "box": [
                                d.bounding_box.origin_x,
                                d.bounding_box.origin_y,
                                d.bounding_box.width,
                                d.bounding_box.height,
                            ],
                            "categories": [
                                {"index": c.index, "name": c.category_name, "score": c.score}
                                for c in d.categories
                            ],
                        }
                        for d in detector.detect(frame).detections
                    ]
                )
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
