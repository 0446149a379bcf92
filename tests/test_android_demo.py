"""The Android app's plain-Java core against tfkd's Python side, on a real CIFAR-10 image.

The Java core is compiled here with the JDK (android_demo/ci/check.sh installs it in CI; a
missing javac fails these tests with the fix, it never skips them)."""

import glob
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tests.conftest import CIFAR_SAMPLE
from tfkd import export
from tfkd.measure import device, runtime
from tools import android_export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "android_demo", "app", "src")
# One mean and std for every channel, with an integer zero point (128 / 255): the uint8 model
# then takes raw bytes exactly (tfkd.export.raw_byte_quantization).
PREP = tfkd.data.Preprocessing((32, 32), 3, 1 / 255, (128 / 255,) * 3, (0.25,) * 3)


@pytest.fixture(scope="module")
def java_classes(tmp_path_factory):
    javac = shutil.which("javac")
    if javac is None:
        pytest.fail(
            "javac is not installed: run android_demo/ci/check.sh (installs "
            "default-jdk-headless) or apt-get install default-jdk-headless."
        )
    out = str(tmp_path_factory.mktemp("java"))
    sources = glob.glob(
        os.path.join(APP, "main", "java", "org", "tfkd", "demo", "core", "*.java")
    ) + [os.path.join(APP, "test", "java", "org", "tfkd", "demo", "core", "HostPreprocess.java")]
    subprocess.run([javac, "--release", "8", "-d", out, *sources], check=True)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A CIFAR-shaped student exported in float32 and with uint8 I/O, with its model card."""
    out = str(tmp_path_factory.mktemp("tflite"))
    model = tfkd.models.build("resnet8", PREP.input_shape, 10)
    rng = np.random.default_rng(0)
    representative = export.RepresentativeSet(
        rng.normal(size=(32, 32, 32, 3)).astype(np.float32), np.arange(32) % 10
    )
    export.export(
        model,
        out,
        ["float32", "int8_io_uint8"],
        preprocessing=PREP,
        class_names=[f"class{i}" for i in range(10)],
        representative=representative,
    )
    return out


def _images(tmp_path):
    """A real CIFAR-10 JPEG as lossless PNG at its own size, and enlarged (the app resizes)."""
    jpeg = sorted(glob.glob(os.path.join(CIFAR_SAMPLE, "test", "*", "*.jpg")))[0]
    pixels = tf.io.decode_jpeg(tf.io.read_file(jpeg), channels=3)
    enlarged = tf.image.resize(pixels, (45, 37), method="nearest")
    paths = {}
    for name, image in (("same_size", pixels), ("enlarged", enlarged)):
        paths[name] = str(tmp_path / f"{name}.png")
        tf.io.write_file(paths[name], tf.io.encode_png(tf.cast(image, tf.uint8)))
    return paths


def _python_input(png):
    """tfkd's path: decode, resize and round as tfkd.data does, then normalise."""
    image = tf.io.decode_png(tf.io.read_file(png), channels=3)
    image = tf.saturate_cast(tf.round(tf.image.resize(image, PREP.image_size)), tf.uint8)
    return PREP.normalize(image).numpy()


@pytest.mark.parametrize("image", ["same_size", "enlarged"])
@pytest.mark.parametrize("variant", ["student_float32", "student_int8_io_uint8"])
def test_java_reads_the_model_and_preprocesses_like_python(
    tmp_path, java_classes, exported, image, variant
):
    png = _images(tmp_path)[image]
    card = export.read_card(exported)
    model_path = os.path.join(exported, card["variants"][variant]["file"])
    floats, quantized = str(tmp_path / "input.f32"), str(tmp_path / "input.u8")
    read = subprocess.run(
        [
            "java",
            "-cp",
            java_classes,
            "org.tfkd.demo.core.HostPreprocess",
            png,
            model_path,
            floats,
            quantized,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # What the app reads from the file is what tfkd wrote into it.
    java_model = json.loads(read)
    with open(model_path, "rb") as f:
        written = tfkd.export.metadata.read(f.read())
    assert java_model["labels"] == card["labels"]
    assert java_model["mean"] == pytest.approx(written["inputs"][0]["normalization"]["mean"])
    assert java_model["std"] == pytest.approx(written["inputs"][0]["normalization"]["std"])
    assert (java_model["height"], java_model["width"], java_model["channels"]) == PREP.input_shape
    assert java_model["probabilities"] is True
    assert java_model["input_dtype"] == card["variants"][variant]["input"]["dtype"]
    if variant.endswith("uint8"):
        assert java_model["input_scale"] == pytest.approx(
            card["variants"][variant]["input"]["scale"], rel=1e-6
        )
        assert java_model["input_zero_point"] == card["variants"][variant]["input"]["zero_point"]

    java_input = np.fromfile(floats, dtype="<f4").reshape(PREP.input_shape)
    python_input = _python_input(png)
    np.testing.assert_allclose(java_input, python_input, rtol=0, atol=1e-6)
    classifier = runtime.TFLiteClassifier(model_path)
    if variant.endswith("uint8"):
        java_bytes = np.fromfile(quantized, dtype=np.uint8).reshape(PREP.input_shape)
        np.testing.assert_array_equal(java_bytes, classifier.quantize(python_input[None])[0])
        # The uint8 model takes the resized pixel bytes themselves.
        resized = tf.saturate_cast(
            tf.round(
                tf.image.resize(tf.io.decode_png(tf.io.read_file(png), channels=3), PREP.image_size)
            ),
            tf.uint8,
        )
        np.testing.assert_array_equal(java_bytes, resized.numpy())
    java_outputs = classifier.predict(java_input[None])
    python_outputs = classifier.predict(python_input[None])
    assert int(np.argmax(java_outputs)) == int(np.argmax(python_outputs))
    np.testing.assert_allclose(java_outputs, python_outputs, atol=1e-5)


def test_java_result_json_is_what_the_device_driver_reads(tmp_path, java_classes):
    source = tmp_path / "Write.java"
    source.write_text(
        "public class Write { public static void main(String[] a) {"
        " System.out.print(org.tfkd.demo.core.BenchmarkResult.toJson("
        'new double[] {3.0, 1.0, 2.0, 10.0}, 40.5, 9.25, "m.tflite", 2, true, "cpu")); } }'
    )
    subprocess.run(
        ["javac", "--release", "8", "-cp", java_classes, "-d", str(tmp_path), str(source)],
        check=True,
    )
    text = subprocess.run(
        ["java", "-cp", f"{java_classes}:{tmp_path}", "Write"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    parsed = device.parse_app_result(text)
    samples = np.array([3.0, 1.0, 2.0, 10.0])
    assert parsed["latency"].runs == 4 and parsed["init_ms"] == 40.5
    assert parsed["latency"].p90_ms == pytest.approx(np.percentile(samples, 90))
    # The app's own percentiles (in the file) agree with numpy's.
    raw = json.loads(text)
    for q in (50, 90, 99):
        assert raw[f"p{q}_ms"] == pytest.approx(np.percentile(samples, q), abs=1e-6)


def test_export_assets_bundles_one_variant_with_card_labels_and_sample(tmp_path, exported):
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "old_model.tflite").write_bytes(b"stale")
    sample = np.zeros((32, 32, 3), np.uint8)
    name = android_export.export_assets(exported, str(assets), sample=sample)
    assert name == "student_int8_io_uint8"  # the app's first preference among those exported
    assert sorted(os.listdir(assets)) == [
        "labels.txt",
        "model_card.json",
        "sample.png",
        "student_int8_io_uint8.tflite",
    ]
    decoded = tf.io.decode_png(tf.io.read_file(str(assets / "sample.png"))).numpy()
    np.testing.assert_array_equal(decoded, sample)
    assert (
        android_export.export_assets(exported, str(assets), "student_float32") == "student_float32"
    )
    with pytest.raises(ValueError, match="no variant 'student_int8'"):
        android_export.export_assets(exported, str(assets), "student_int8")


def test_the_java_preference_order_matches_pythons():
    java = open(
        os.path.join(APP, "main", "java", "org", "tfkd", "demo", "core", "ModelCard.java")
    ).read()
    start = java.index("PREFERENCE = {")
    names = [
        s.strip().strip('"')
        for s in java[start : java.index("};", start)].split("{")[1].replace("\n", " ").split(",")
        if s.strip()
    ]
    assert tuple(names) == android_export.PREFERENCE


def test_the_bundled_assets_classify_their_sample_alike_in_java_and_python(tmp_path, java_classes):
    """The committed assets (from the README's digits run) are consistent with each other."""
    assets = os.path.join(APP, "main", "assets")
    card = export.read_card(assets)
    bundled = [
        n for n, v in card["variants"].items() if os.path.exists(os.path.join(assets, v["file"]))
    ]
    assert len(bundled) == 1, "tools/android_export.py bundles exactly one variant"
    variant = card["variants"][bundled[0]]
    floats = str(tmp_path / "input.f32")
    read = subprocess.run(
        [
            "java",
            "-cp",
            java_classes,
            "org.tfkd.demo.core.HostPreprocess",
            os.path.join(assets, "sample.png"),
            os.path.join(assets, variant["file"]),
            floats,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert json.loads(read)["labels"] == card["labels"]
    prep = tfkd.data.Preprocessing.from_dict(card["preprocessing"])
    java_input = np.fromfile(floats, dtype="<f4").reshape(prep.input_shape)
    image = tf.io.decode_png(
        tf.io.read_file(os.path.join(assets, "sample.png")), channels=prep.channels
    )
    np.testing.assert_allclose(java_input, prep.normalize(image).numpy(), atol=1e-6)
    classifier = runtime.TFLiteClassifier(os.path.join(assets, variant["file"]))
    labels = open(os.path.join(assets, card["labels_file"])).read().split()
    assert labels == card["labels"]
    assert classifier.predict(java_input[None]).shape == (1, len(labels))
