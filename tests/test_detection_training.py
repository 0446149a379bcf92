"""A detector trained on the generated set finds its objects, in Keras, in its int8 `.tflite` and
through MediaPipe's ObjectDetector, each scored by pycocotools (tfkd/tasks/detection/models.py).

In the slow suite: a minute of training. What it checks is mechanics (targets, loss, decoding
and export agree), so it scores the training images: generalisation is the benchmark's."""

import pytest

from tests.conftest import CIFAR_SAMPLE
from tests.test_detection_export import mediapipe_detections
from tfkd.keras import keras
from tfkd.tasks.detection import data, export, metrics, models
from tools.make_detection_set import make_detection_set

SIZE, CLASSES = 64, ["airplane", "frog", "truck"]
PREP = models.preprocessing(SIZE)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection") / "set"
    make_detection_set(CIFAR_SAMPLE, str(root), CLASSES, {"train": 256}, SIZE, 3, "coco", seed=0)
    split = data.load(f"coco:{root}")["train"]
    keras.utils.set_random_seed(0)
    detector, anchors = models.build("detector_small", SIZE, len(CLASSES))
    images = models.images(split, SIZE)
    normalized = PREP.normalize(images).numpy()
    sizes = [(i.width, i.height) for i in split.images]
    untrained = metrics.coco_map(split, models.detect(detector, anchors, normalized, sizes))
    labels, encodings = models.training_targets(split, anchors)
    trainer = models.DetectorTrainer(detector)
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, 80 * len(images) // 32)
    trainer.compile(optimizer=keras.optimizers.Adam(schedule))
    trainer.fit(normalized, (labels, encodings), batch_size=32, epochs=80, verbose=0)
    path = tmp_path_factory.mktemp("exported") / "detector_int8_io_uint8.tflite"
    path.write_bytes(
        export.convert(
            detector, anchors, CLASSES, PREP, "int8_io_uint8", representative=normalized[:64]
        )
    )
    return split, detector, anchors, images, sizes, untrained, path


@pytest.mark.slow
def test_a_trained_detector_finds_its_objects_in_keras_and_in_int8(trained):
    split, detector, anchors, images, sizes, untrained, path = trained
    normalized = PREP.normalize(images).numpy()
    keras_map = metrics.coco_map(split, models.detect(detector, anchors, normalized, sizes))
    int8_map = metrics.coco_map(split, export.run_tflite(str(path), images, PREP, sizes))
    # Untrained it scores about 0.01 at IoU .5; trained, near 1 (0.98 mAP on seed 0).
    assert untrained["map50"] < 0.1
    assert keras_map["map50"] > 0.8 and keras_map["map"] > 0.5, keras_map
    # The int8 file keeps most of it.
    assert int8_map["map50"] > keras_map["map50"] - 0.15, (int8_map, keras_map)


@pytest.mark.slow
def test_mediapipe_finds_the_objects_of_the_int8_detector_and_names_them(
    trained, tmp_path, mediapipe_python
):
    split, _, _, images, sizes, _, path = trained
    found = mediapipe_detections(mediapipe_python, path, images[:32], tmp_path, CLASSES)
    first = data.DetectionSplit(split.images[:32], split.class_names)
    # Whole-pixel boxes cost a little at the high IoU thresholds, not at .5.
    assert metrics.coco_map(first, found)["map50"] > 0.7
