"""The detectors by name (tfkd/tasks/detection/backbones.py, models.py): tfkd's own CNNs and
keras.applications backbones, their weights, and the mobile student's int8 file."""

import numpy as np
import pytest

from pipelines.config import Config
from tfkd import quantize
from tfkd.export import tflite_info
from tfkd.keras import keras
from tfkd.tasks.detection import backbones, export, models

SIZE, CLASSES = 64, 3


@pytest.fixture(scope="module")
def built() -> dict:
    return {name: models.build(name, SIZE, CLASSES) for name in models.available()}


def test_every_detector_predicts_one_box_and_score_set_per_anchor(built):
    for name, (model, anchors) in built.items():
        boxes, logits = model(np.zeros((2, SIZE, SIZE, 3), np.float32))
        assert boxes.shape == (2, len(anchors), 4), name
        assert logits.shape == (2, len(anchors), 1 + CLASSES), name
        # One anchor per cell of the stride-8 and stride-16 maps.
        assert len(anchors) == (SIZE // 8) ** 2 + (SIZE // 16) ** 2


def test_the_mobile_student_has_ssdlites_separable_head_and_is_smaller_than_its_teachers(built):
    student = built["ssdlite_mobilenet_v2"][0]
    depthwise = [
        layer.name
        for layer in student.layers
        if isinstance(layer, keras.layers.DepthwiseConv2D)
        and layer.name.startswith(("head", "predict"))
    ]
    assert sorted(depthwise) == ["head16_dw", "head8_dw", "predict16_dw", "predict8_dw"]
    for teacher in ("ssd_mobilenet_v2", "ssd_efficientnet_b0"):
        assert built[teacher][0].count_params() > 5 * student.count_params()
    assert "QAT doctor: every layer" in str(quantize.doctor(student))


def test_weights_come_from_an_h5_file_by_layer_name_and_own_cnns_refuse_imagenet(tmp_path):
    keras.utils.set_random_seed(1)
    saved, _ = models.build("ssdlite_mobilenet_v2", SIZE, CLASSES)
    path = str(tmp_path / "detector.h5")
    saved.save_weights(path)
    keras.utils.set_random_seed(2)
    loaded, _ = models.build("ssdlite_mobilenet_v2", SIZE, CLASSES, weights=path)
    for a, b in zip(saved.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="no ImageNet weights"):
        backbones.features("detector_small", keras.Input((SIZE, SIZE, 3)), None, "imagenet")
    with pytest.raises(ValueError, match=r"--student_weights=imagenet: detector_small has no"):
        Config(
            dataset=f"coco:{tmp_path}",
            image_size=(SIZE, SIZE),
            teacher="detector_large",
            student="detector_small",
            student_weights="imagenet",
            modes=("float32", "int8_io_uint8"),
        )


@pytest.mark.slow
def test_the_mobile_student_after_qat_exports_integer_only_but_the_post_processing():
    """(In the slow suite: the QAT conversion with the post-processing op takes about 15 s.)"""
    student, anchors = models.build("ssdlite_mobilenet_v2", SIZE, CLASSES)
    qat = quantize.quantize_student(student)
    images = np.random.default_rng(0).uniform(-1, 1, (8, SIZE, SIZE, 3)).astype(np.float32)
    content = export.convert(
        qat, anchors, ["a", "b", "c"], models.preprocessing(SIZE), "int8_io_uint8", images
    )
    info = tflite_info.describe(content)
    assert [op.name for op in info.float_ops] == ["TFLite_Detection_PostProcess"]
    assert info.inputs[0].dtype == "uint8"
