"""Tests of tfkd/export/metadata.py (the writer and reader) and of exported models in MediaPipe
Tasks' ImageClassifier, the client Android apps use."""

import glob
import io
import json
import os
import subprocess
import zipfile

import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tests.conftest import CIFAR_SAMPLE
from tfkd import export
from tfkd.export import metadata
from tfkd.keras import keras
from tfkd.measure import parity, runtime
from tfkd.tasks import classification
from tfkd.third_party import tflite_metadata_schema as schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT = os.path.join(ROOT, "tests", "clients", "mediapipe_classify.py")
LABELS = ["cat", "dog", "bird"]


def _info(**change):
    values = dict(
        name="m", description="d", version="1", labels=LABELS, mean=[127.0] * 3, std=[64.0] * 3
    )
    values.update(change)
    return metadata.ImageClassifierInfo(**values)


@pytest.fixture(scope="module")
def float_model():
    keras.utils.set_random_seed(0)
    model = tfkd.models.build("cnn_tiny", (8, 8, 3), 3)
    return export.convert(classification.with_probabilities(model), "float32")


def test_written_metadata_reads_back_and_the_model_still_runs(float_model):
    written = metadata.write_image_classifier(float_model, _info())
    read = metadata.read(written)
    assert read["name"] == "m" and read["version"] == "1" and read["author"] == "tfkd"
    assert read["inputs"][0]["normalization"] == {"mean": [127.0] * 3, "std": [64.0] * 3}
    assert read["outputs"][0]["name"] == "probabilities"
    assert read["outputs"][0]["associated_files"] == [
        {"name": "labels.txt", "type": schema.AssociatedFileType.TENSOR_AXIS_LABELS}
    ]
    assert read["associated_files"] == {"labels.txt": "cat\ndog\nbird\n"}
    # LiteRT ignores metadata and the appended archive: same outputs as without them.
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        runtime.TFLiteClassifier(written).predict(x),
        runtime.TFLiteClassifier(float_model).predict(x),
    )
    assert metadata.read(float_model) is None


def test_the_same_model_gets_the_same_bytes_at_any_time(float_model, monkeypatch):
    """The labels file inside carries a fixed date, not the clock's: an export repeats to the
    byte, and so does its sha256 in the model card."""
    import time

    first = metadata.write_image_classifier(float_model, _info())
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)
    assert metadata.write_image_classifier(float_model, _info()) == first


def test_metadata_is_replaced_not_duplicated(float_model):
    once = metadata.write_image_classifier(float_model, _info(version="1"))
    twice = metadata.write_image_classifier(once, _info(version="2"))
    assert metadata.read(twice)["version"] == "2"
    runtime.load_interpreter(twice)  # still a valid model
    from tensorflow.lite.tools import flatbuffer_utils

    flat = twice[: metadata._archive_start(twice)]
    names = [m.name for m in flatbuffer_utils.read_model_from_bytearray(bytearray(flat)).metadata]
    assert names.count(b"TFLITE_METADATA") == 1
    with zipfile.ZipFile(io.BytesIO(twice)) as archive:
        assert archive.namelist() == ["labels.txt"]
    assert metadata.write_image_classifier(twice, _info(version="1")) == once


@pytest.mark.parametrize(
    "change, message",
    [
        ({"labels": ["cat", "d\nog", "bird"]}, "on one line each"),
        ({"labels": ["cat", "dog"]}, "outputs 3 classes but 2 labels"),
        ({"output": "scores"}, "`output` must be one of"),
        ({"mean": [1.0], "std": [1.0]}, "3 channel"),
        ({"std": [64.0, 0.0, 64.0]}, "std > 0"),
    ],
)
def test_bad_metadata_is_refused_with_the_reason(float_model, change, message):
    with pytest.raises(ValueError, match=message):
        metadata.write_image_classifier(float_model, _info(**change))


def test_a_model_whose_input_is_not_an_image_is_refused():
    inputs = keras.Input((5,))
    vector = export.convert(keras.Model(inputs, keras.layers.Dense(3)(inputs)), "float32")
    with pytest.raises(ValueError, match="needs an image input"):
        metadata.write_image_classifier(vector, _info())


def test_min_parser_version_follows_the_schema():
    md = schema.ModelMetadataT()
    subgraph = schema.SubGraphMetadataT()
    md.subgraphMetadata = [subgraph]
    assert metadata.min_parser_version(md) == "1.0.0"
    vocabulary = schema.AssociatedFileT()
    vocabulary.type = schema.AssociatedFileType.VOCABULARY
    md.associatedFiles = [vocabulary]
    assert metadata.min_parser_version(md) == "1.0.1"
    subgraph.inputTensorGroups = [schema.TensorGroupT()]
    assert metadata.min_parser_version(md) == "1.2.0"
    vocabulary.version = "2"
    assert metadata.min_parser_version(md) == "1.4.1"
    subgraph.customMetadata = [schema.CustomMetadataT()]
    assert metadata.min_parser_version(md) == "1.5.0"


def test_uint8_input_quantization_is_the_normalisation():
    prep = tfkd.data.Preprocessing((8, 8), 3, 1 / 255, (128 / 255,) * 3, (0.25,) * 3)
    scale, zero_point = export.raw_byte_quantization(prep)
    assert zero_point == 128 and scale == pytest.approx(1 / 255 / 0.25)
    raw = np.arange(256, dtype=np.float32)
    np.testing.assert_allclose(
        (raw - zero_point) * scale, prep.normalize(raw[:, None])[:, 0].numpy(), atol=1e-5
    )
    per_channel = tfkd.data.Preprocessing((8, 8), 3, 1 / 255, (0.4, 0.5, 0.6), (0.2,) * 3)
    with pytest.raises(ValueError, match="one mean and one std for every channel"):
        export.raw_byte_quantization(per_channel)


# The real client --------------------------------------------------------------------------

MODES = ("float32", "float16", "dynamic", "int8", "int8_io_uint8", "int8_io_int8")


def mediapipe_classify(python, images, directory, models) -> dict:
    """MediaPipe's ImageClassifier on `images` with each of `models`, in one process of the
    MediaPipe virtualenv (tests/clients/mediapipe_classify.py): model path -> its result."""
    np.save(directory / "images.npy", images)
    subprocess.run(
        [
            python,
            CLIENT,
            str(directory / "images.npy"),
            str(directory / "classified.json"),
            *map(str, models),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return json.loads((directory / "classified.json").read_text())


def _cifar_sample():
    paths = sorted(glob.glob(os.path.join(CIFAR_SAMPLE, "*", "*", "*.jpg")))
    classes = sorted({os.path.basename(os.path.dirname(p)) for p in paths})
    images = np.stack([tf.io.decode_jpeg(tf.io.read_file(p), channels=3).numpy() for p in paths])
    labels = np.array([classes.index(os.path.basename(os.path.dirname(p))) for p in paths])
    return images, labels, classes


def test_mediapipe_reads_the_labels_and_normalisation_the_metadata_gives(
    float_model, tmp_path, mediapipe_python
):
    """The fast suite's check with the real client: MediaPipe's ImageClassifier loads a file
    with tfkd's metadata, names each score with its label, and normalises the bytes as the
    metadata says (its scores are the model's on tfkd's normalised input). Every mode of a
    trained model goes through it in the slow suite, below."""
    path = tmp_path / "m.tflite"
    path.write_bytes(metadata.write_image_classifier(float_model, _info()))
    images = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    result = mediapipe_classify(mediapipe_python, images, tmp_path, [path])[str(path)]
    assert "error" not in result, result.get("error")
    expected = runtime.TFLiteClassifier(float_model).predict((images - 127.0) / 64.0)
    for categories, probabilities in zip(result["images"], expected):
        assert all(c["name"] == LABELS[c["index"]] for c in categories)
        scores = sorted((c["index"], c["score"]) for c in categories)
        np.testing.assert_allclose([score for _, score in scores], probabilities, atol=1e-5)


# In the slow suite: a trained model (8 s) in six modes (15 s of conversion) and MediaPipe.
@pytest.fixture(scope="module")
def mediapipe_results(tmp_path_factory, mediapipe_python):
    """Every mode of a briefly trained 3-channel student, classified by MediaPipe."""
    out = tmp_path_factory.mktemp("mediapipe")
    images, labels, classes = _cifar_sample()
    prep = tfkd.data.photo_preprocessing((32, 32), 3)  # what folder:PATH datasets get
    keras.utils.set_random_seed(0)
    student = tfkd.models.build("resnet8", prep.input_shape, len(classes))
    normalized = prep.normalize(images).numpy()
    train = (
        tf.data.Dataset.from_tensor_slices((normalized, labels))
        .shuffle(len(labels), seed=0)
        .batch(16)
    )
    tfkd.distill.training.train_classifier(student, train, epochs=30, learning_rate=3e-3, verbose=0)
    representative = export.RepresentativeSet(normalized[:40], labels[:40])
    card = export.export(
        student,
        str(out),
        MODES,
        preprocessing=prep,
        class_names=classes,
        representative=representative,
    )
    paths = {mode: str(out / card["variants"][f"student_{mode}"]["file"]) for mode in MODES}
    classified = mediapipe_classify(mediapipe_python, images, out, paths.values())
    results = {
        mode: (classified[path], path, card["variants"][f"student_{mode}"])
        for mode, path in paths.items()
    }
    return results, normalized, labels, classes


@pytest.mark.slow
@pytest.mark.parametrize("mode", [m for m in MODES if m != "int8_io_int8"])
def test_mediapipe_classifies_every_mode_with_labels_and_probabilities(mediapipe_results, mode):
    results, normalized, labels, classes = mediapipe_results
    result, path, entry = results[mode]
    assert "error" not in result, result.get("error")
    tfkd_top1 = runtime.TFLiteClassifier(path).predict(normalized).argmax(axis=1)
    mediapipe_top1 = []
    for categories in result["images"]:
        assert sorted(c["name"] for c in categories) == sorted(classes)
        assert all(c["name"] == classes[c["index"]] for c in categories)
        scores = [c["score"] for c in categories]
        if entry["output"]["dtype"] == "float32" and entry["quantization"] != "int8":
            assert sum(scores) == pytest.approx(1.0, abs=1e-3)
        else:
            # An int8 softmax's outputs are multiples of its 1/256 step: each rounds by half.
            assert sum(scores) == pytest.approx(1.0, abs=len(classes) / 512 + 1e-6)
        mediapipe_top1.append(max(categories, key=lambda c: c["score"])["index"])
    agreement = np.mean(np.array(mediapipe_top1) == tfkd_top1)
    assert agreement >= 0.99, f"{mode}: MediaPipe and tfkd agree on {agreement:.1%}"
    # The briefly trained student learned something (chance is 10%) and does not answer one
    # class for everything, so the agreement above is not trivial.
    assert np.mean(np.array(mediapipe_top1) == labels) > 0.25
    assert len(set(mediapipe_top1)) >= 4


@pytest.mark.slow
def test_mediapipe_refuses_int8_input_so_apps_use_uint8(mediapipe_results):
    result, _, _ = mediapipe_results[0]["int8_io_int8"]
    assert "uint8/float32" in result["error"] and "INT8" in result["error"]


@pytest.mark.slow
def test_uint8_model_takes_raw_bytes_like_the_float_model(mediapipe_results):
    results, normalized, labels, _ = mediapipe_results
    _, uint8_path, entry = results["int8_io_uint8"]
    _, float_path, _ = results["float32"]
    interpreter = runtime.load_interpreter(uint8_path)
    detail = interpreter.get_input_details()[0]
    raw = np.round((normalized * 0.5 + 128 / 255) * 255).astype(np.uint8)  # the original bytes
    top1 = []
    for image in raw:
        interpreter.set_tensor(detail["index"], image[None])
        interpreter.invoke()
        top1.append(
            int(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).argmax())
        )
    # Raw bytes are what tfkd's own path (normalise, then quantize with the model's scale and
    # zero point) feeds this model.
    quantized_path = runtime.TFLiteClassifier(uint8_path)
    assert np.mean(quantized_path.quantize(normalized) == raw) == 1.0
    assert np.mean(np.array(top1) == quantized_path.predict(normalized).argmax(axis=1)) == 1.0
    # The same network with float input agrees, and against the float model raw bytes lose no
    # more than PTQ noise on this sample (3 of 120 images; the pipeline's verify stage applies
    # --max_drop_points on the whole test split, through this same input path).
    _, int8_path, _ = results["int8"]
    int8_top1 = runtime.TFLiteClassifier(int8_path).predict(normalized).argmax(axis=1)
    assert np.mean(np.array(top1) == int8_top1) >= 0.99
    float_top1 = runtime.TFLiteClassifier(float_path).predict(normalized).argmax(axis=1)
    parity.parity_gate(
        np.mean(float_top1 == labels),
        {"uint8, raw bytes": np.mean(np.array(top1) == labels)},
        max_drop_points=100 * 3 / len(labels),
    )
