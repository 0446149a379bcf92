"""A detector exported with TFLite's detection post-processing (tfkd/tasks/detection/export.py):
LiteRT runs it as the numpy decoding of the Keras outputs says, and MediaPipe's ObjectDetector,
the client Android apps use, loads it, finds the same boxes and names them with the labels."""

import json
import os
import subprocess

import numpy as np
import pytest

from tfkd.export import metadata
from tfkd.keras import keras
from tfkd.measure import runtime
from tfkd.tasks.detection import export, metrics, models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT = os.path.join(ROOT, "tests", "clients", "mediapipe_detect.py")
SIZE, LABELS = 64, ("cat", "dog", "bird")
MEAN, STD = (127.5,) * 3, (127.5,) * 3


def _detector(anchors: int) -> keras.Model:
    """A small single-level SSD-style detector (untrained: only the plumbing matters here)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs
    for filters in (8, 16, 16):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    boxes = keras.layers.Reshape((anchors, 4))(keras.layers.Conv2D(4, 1)(x))
    classes = keras.layers.Conv2D(
        1 + len(LABELS), 1, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0)
    )(x)
    return keras.Model(inputs, [boxes, keras.layers.Reshape((anchors, 1 + len(LABELS)))(classes)])


# input = (raw / 255 - 0.5) / 0.5 = (raw - 127.5) / 127.5
PREP = models.preprocessing(SIZE)


def _normalized(images):
    return (images.astype(np.float32) - 127.5) / 127.5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The detector in both modes, and images to run it on."""
    anchors = export.grid_anchors(SIZE, [8], [16.0])
    model = _detector(len(anchors))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    calibration = _normalized(rng.integers(0, 256, (16, SIZE, SIZE, 3), dtype=np.uint8))
    out = tmp_path_factory.mktemp("detector")
    paths = {}
    for mode in export.MODES:
        paths[mode] = out / f"detector_{mode}.tflite"
        paths[mode].write_bytes(
            export.convert(
                model,
                anchors,
                LABELS,
                PREP,
                mode,
                representative=calibration,
                post=export.PostProcessing(max_detections=5),
            )
        )
    return model, anchors, paths, images


def _expected_top(model, anchors, image):
    """The best-scoring (box, class) by numpy: softmax over the classes, background aside, and
    the SSD decoding of that anchor's encoding (ratios y_min, x_min, y_max, x_max)."""
    normalized = _normalized(image)[None]
    encodings, logits = (np.asarray(t)[0] for t in model(normalized, training=False))
    scores = np.exp(logits - logits.max(-1, keepdims=True))
    scores = (scores / scores.sum(-1, keepdims=True))[:, 1:]
    anchor, label = np.unravel_index(np.argmax(scores), scores.shape)
    ty, tx, th, tw = encodings[anchor] / np.array([10.0, 10.0, 5.0, 5.0])
    ya, xa, ha, wa = anchors[anchor]
    y, x, h, w = ty * ha + ya, tx * wa + xa, np.exp(th) * ha, np.exp(tw) * wa
    return np.array([y - h / 2, x - w / 2, y + h / 2, x + w / 2]), int(label), scores.max()


def _litert(path, image):
    """The four outputs of the op, in port order (boxes, classes, scores, count)."""
    interpreter = runtime.load_interpreter(str(path))
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(
        detail["index"], image[None] if detail["dtype"] == np.uint8 else _normalized(image)[None]
    )
    interpreter.invoke()
    outputs = sorted(interpreter.get_output_details(), key=lambda d: d["index"])
    return [interpreter.get_tensor(d["index"]) for d in outputs]


def test_litert_runs_the_post_processing_as_numpy_decodes_the_keras_outputs(exported):
    model, anchors, paths, images = exported
    interpreter = runtime.load_interpreter(str(paths["float32"]))
    outputs = sorted(interpreter.get_output_details(), key=lambda d: d["index"])
    assert [tuple(d["shape"]) for d in outputs] == [(1, 5, 4), (1, 5), (1, 5), (1,)]
    for image in images:
        boxes, classes, scores, count = _litert(paths["float32"], image)
        box, label, score = _expected_top(model, anchors, image)
        assert int(count[0]) == 5
        # The best score is numpy's; its box and class are among the detections (two scores
        # within rounding may come in either order on another CPU).
        assert scores[0, 0] == pytest.approx(score, abs=1e-5)
        same = [
            i
            for i in range(5)
            if np.allclose(boxes[0, i], box, atol=1e-4)
            and int(classes[0, i]) == label
            and abs(scores[0, i] - score) < 1e-5
        ]
        assert len(same) == 1, (box, label, score, boxes, classes, scores)
    # A zero encoding is the anchor: the first cell's centre (1/16) with a side of 16/64.
    np.testing.assert_allclose(
        export.decode([[0, 0, 0, 0]], anchors[:1]), [[-0.0625, -0.0625, 0.1875, 0.1875]]
    )


@pytest.mark.parametrize("mode", export.MODES)
def test_the_metadata_names_the_four_outputs_and_the_labels(exported, mode):
    _, _, paths, _ = exported
    path = paths[mode]
    read = metadata.read(path.read_bytes())
    # The op's output ports (boxes, classes, scores, count) in tensor-index order, whatever
    # order the subgraph lists them in (LiteRT's output details follow the subgraph).
    indices = [d["index"] for d in runtime.load_interpreter(str(path)).get_output_details()]
    port = {index: rank for rank, index in enumerate(sorted(indices))}
    expected = [metadata.DETECTOR_OUTPUTS[port[i]] for i in indices]
    assert [t["name"] for t in read["outputs"]] == expected
    assert read["inputs"][0]["normalization"] == {"mean": list(MEAN), "std": list(STD)}
    assert read["associated_files"]["labels.txt"].split() == list(LABELS)


def mediapipe_detect(python, path, images, work) -> dict:
    """What MediaPipe's ObjectDetector (the client `tests/clients/mediapipe_detect.py`, in
    its own virtualenv) finds in uint8 `images` with the file at `path`, as the client writes
    it; `work` is a directory for its files."""
    np.save(work / "images.npy", images)
    subprocess.run(
        [python, CLIENT, str(path), str(work / "images.npy"), str(work / "out.json")],
        check=True,
        capture_output=True,
        timeout=300,
    )
    result = json.loads((work / "out.json").read_text())
    assert "error" not in result, (path, result)
    return result


def mediapipe_detections(python, path, images, work, labels) -> list[metrics.Detections]:
    """`mediapipe_detect` as `metrics.Detections`: pixel corners, and classes from the names
    (the labels of the file's metadata; MediaPipe reports no index here)."""
    found = []
    for detections in mediapipe_detect(python, path, images, work)["images"]:
        names = [d["categories"][0]["name"] for d in detections]
        assert set(names) <= set(labels), names
        boxes = np.array([d["box"] for d in detections], np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # (x, y, width, height) -> corners
        found.append(
            metrics.Detections(
                boxes,
                np.array([list(labels).index(name) for name in names]),
                np.array([d["categories"][0]["score"] for d in detections]),
            )
        )
    return found


def _mediapipe(python, paths, images, tmp_path) -> dict:
    return {mode: mediapipe_detect(python, path, images, tmp_path) for mode, path in paths.items()}


def _pixels(box):
    """Ratio corners (y_min, x_min, y_max, x_max) as MediaPipe's pixel (x, y, width, height),
    clipped to the image."""
    y0, x0, y1, x1 = np.clip(box, 0, 1) * SIZE
    return [x0, y0, x1 - x0, y1 - y0]


def test_mediapipe_object_detector_finds_the_same_boxes_and_names_them(
    exported, tmp_path, mediapipe_python
):
    model, anchors, paths, images = exported
    results = _mediapipe(mediapipe_python, paths, images, tmp_path)
    for mode, result in results.items():
        for image, detections in zip(images, result["images"]):
            assert 1 <= len(detections) <= 5, mode
            if mode == "float32":  # the Keras model's own answer, decoded by numpy
                box, label, score = _expected_top(model, anchors, image)
            else:  # the int8 file's own answer, from LiteRT fed the same raw bytes
                boxes, classes, scores, _ = _litert(paths[mode], image)
                box, label, score = boxes[0, 0], int(classes[0, 0]), float(scores[0, 0])
            # Among MediaPipe's detections (whole pixels; near-equal scores may come in either
            # order on another CPU): that box, with that name and score.
            same = [
                d
                for d in detections
                if np.allclose(d["box"], _pixels(box), atol=1.5)
                and d["categories"][0]["name"] == LABELS[label]
                and abs(d["categories"][0]["score"] - score) < 1e-4
            ]
            assert len(same) == 1, (mode, box, label, score, detections)
            assert (
                same[0]["categories"][0]["score"]
                >= max(d["categories"][0]["score"] for d in detections) - 1e-4
            ), mode
