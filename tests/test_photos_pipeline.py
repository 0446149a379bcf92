"""The photos path end to end, in a file of its own so that pytest-xdist (--dist loadfile)
can run it beside test_pipeline.py."""

import json

import pytest

import tfkd
from tests.test_pipeline import _main
from tfkd.keras import keras


@pytest.mark.slow
def test_photos_at_two_resolutions_with_a_pretrained_application_teacher(tmp_path):
    """The photos path end to end on a tiny photo-like folder: EXIF-rotated JPEGs of varying
    size, a keras_applications teacher from a weights file at 48x48, a mobile student at 32x32,
    the per-step path and then the teacher cache."""
    from tests.conftest import CIFAR_SAMPLE
    from tools.make_photo_folder import make_photo_folder

    photos = tmp_path / "photos"
    made = make_photo_folder(CIFAR_SAMPLE, str(photos), ["cat", "dog"], 10, 4, rotated_fraction=0.5)
    assert made["rotated"] > 0
    prep = tfkd.data.photo_preprocessing((48, 48), 3)
    pretrained = tfkd.models.pretrained.build("keras_applications:MobileNet", (48, 48, 3), 2, prep)
    backbone = keras.Model(pretrained.input, pretrained.get_layer("head_dropout").input)
    backbone.save_weights(str(tmp_path / "backbone.h5"))
    run = tmp_path / "run"
    common = (
        "--dataset=folder:" + str(photos),
        "--image_size=32,32",
        "--teacher_image_size=48,48",
        "--resize=crop",
        "--teacher=keras_applications:MobileNet",
        f"--teacher_weights={tmp_path / 'backbone.h5'}",
        "--teacher_head_epochs=1",
        "--teacher_epochs=1",
        "--student=mobilenet_v3_small_minimalistic",
        "--student_epochs=1",
        # The photos recipe's fixed loss: no race of candidates (tests/test_pipeline.py races).
        "--loss=kd",
        "--qat_epochs=0",
        "--modes=float32",
        "--flip",
        "--pad_crop=2",
        "--benchmark_runs=2",
        "--max_drop_points=100",
        f"--out_dir={run}",
    )
    result = _main(*common)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "teacher_head" / "head.h5").exists()
    card = json.loads((run / "tflite" / "model_card.json").read_text())
    assert card["preprocessing"]["image_size"] == [32, 32]
    assert card["preprocessing"]["resize"] == "crop"
    variants = card["variants"]
    assert variants["student_float32"]["input"]["shape"][1:] == [32, 32, 3]
    assert variants["teacher_float32"]["input"]["shape"][1:] == [48, 48, 3]
    teacher = keras.models.load_model(run / "teacher" / "teacher.keras", compile=False)
    assert teacher.input_shape == (None, 48, 48, 3)
    # Its .tflite was verified at its own size: the same accuracy as the Keras teacher there.
    manifest = json.loads((run / "manifest.json").read_text())
    keras_teacher = manifest["stages"]["teacher"]["metrics"]["accuracy"]
    assert variants["teacher_float32"]["accuracy"]["value"] == pytest.approx(
        keras_teacher, abs=1e-9
    )
    report = json.loads((run / "report.json").read_text())
    assert report["summary"]["kd_gain_standard_error"] is not None
    # The student again, through the teacher cache (logits of the teacher's own views, mixed
    # with cutmix: one box at both resolutions): the trained teacher is reused, not retrained.
    cached = _main(
        *common,
        "--teacher_cache=disk",
        "--teacher_cache_views=2",
        "--augment=cutmix",
        "--stages=student",
    )
    assert cached.returncode == 0, cached.stderr[-3000:]
    assert "Reruns: student (asked for)" in cached.stdout
    key = json.loads((run / "teacher_cache" / "teacher_logits.json").read_text())
    assert key["base_size"] == [32, 32] and key["mixing"]["kind"] == "cutmix"
