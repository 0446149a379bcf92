"""The user's own models through the whole pipeline: a Keras 3 teacher with an in-model
Rescaling (the Keras tutorials' way), measured right with no extra flag, and a Keras 3 student
file distilled, quantized, exported and handed back as a Keras 3 file."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfkd
from pipelines import scheduler
from pipelines.config import Config
from tfkd.keras import keras3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
k3 = keras3()


def _keras3_teacher(splits):
    """Trained in Keras 3 on raw digit pixels (0..16), rescaled inside the model."""
    images, labels = (np.stack(a) for a in zip(*splits.train.as_numpy_iterator()))
    k3.utils.set_random_seed(0)
    inputs = k3.Input((8, 8, 1))
    x = k3.layers.Rescaling(1 / 16.0)(inputs)
    x = k3.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = k3.layers.Flatten()(x)
    model = k3.Model(inputs, k3.layers.Dense(10)(x), name="keras3_teacher")
    model.compile("adam", k3.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images.astype("float32"), labels, epochs=15, batch_size=64, verbose=0)
    return model


def _keras3_student():
    inputs = k3.Input((8, 8, 1))
    x = k3.layers.Conv2D(8, 3, padding="same")(inputs)
    x = k3.layers.ReLU()(k3.layers.BatchNormalization()(x))
    x = k3.layers.DepthwiseConv2D(3, padding="same")(x)
    x = k3.layers.Activation("hard_swish")(k3.layers.BatchNormalization()(x))
    x = k3.layers.GlobalAveragePooling2D()(x)
    return k3.Model(inputs, k3.layers.Dense(10)(x), name="app_student")


@pytest.fixture(scope="module")
def keras3_teacher():
    return _keras3_teacher(tfkd.data.load("digits"))


def _own_test_accuracy(predict, splits, normalized: bool) -> float:
    """A teacher's test accuracy as its own framework measures it on tfkd's test images."""
    images, labels = (np.stack(a) for a in zip(*splits.test.as_numpy_iterator()))
    inputs = (
        splits.preprocessing.normalize(images).numpy() if normalized else images.astype("float32")
    )
    return float(np.mean(np.argmax(predict(inputs), -1) == labels))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tf_keras_on_tfkd_inputs", "saved_model_raw_pixels"])
def test_teacher_files_are_measured_as_their_own_framework_measures_them(
    tmp_path, kind, keras3_teacher
):
    splits = tfkd.data.load("digits")
    if kind == "tf_keras_on_tfkd_inputs":
        tfkd.keras.utils.set_random_seed(0)
        model = tfkd.models.build("cnn_small", (8, 8, 1), 10)
        tfkd.distill.training.train_classifier(
            model,
            tfkd.data.batches(splits.train, splits.preprocessing, 64, shuffle=True),
            epochs=5,
            verbose=0,
        )
        path, convention = str(tmp_path / "teacher.keras"), "student"
        model.save(path)
        own = _own_test_accuracy(lambda x: model.predict(x, verbose=0), splits, True)
    else:
        path, convention = str(tmp_path / "saved"), "raw"
        keras3_teacher.export(path, verbose=False)  # a SavedModel: serving_default signature
        own = _own_test_accuracy(lambda x: keras3_teacher.predict(x, verbose=0), splits, False)
    results = scheduler.execute(
        Config(out_dir=str(tmp_path / "run"), teacher=path, stages=("teacher",))
    )
    assert results["teacher"]["input"]["convention"] == convention
    assert abs(results["teacher"]["accuracy"] - own) <= 0.01, (results["teacher"], own)
    assert own > 0.8


@pytest.mark.slow
def test_keras3_teacher_and_student_files_go_end_to_end(tmp_path, keras3_teacher):
    splits = tfkd.data.load("digits")
    teacher = keras3_teacher
    teacher.save(tmp_path / "teacher.keras")
    _keras3_student().save(tmp_path / "student.keras")
    test_images, test_labels = (np.stack(a) for a in zip(*splits.test.as_numpy_iterator()))
    own = float(
        np.mean(
            np.argmax(teacher.predict(test_images.astype("float32"), verbose=0), -1) == test_labels
        )
    )
    run = tmp_path / "run"
    config = Config(
        out_dir=str(run),
        teacher=str(tmp_path / "teacher.keras"),
        student=str(tmp_path / "student.keras"),
        student_epochs=3,
        qat_epochs=1,
        modes=("float32", "int8"),
        max_drop_points=100.0,
        benchmark_runs=2,
        threads=(1,),
    )
    results = scheduler.execute(config)

    # The teacher: raw pixels found by measurement, its accuracy as Keras 3 measures it.
    assert results["teacher"]["input"]["convention"] == "raw"
    report = json.loads((run / "report.json").read_text())
    reported = {m["name"]: m["accuracy"] for m in report["models"]}
    assert abs(reported["teacher"] - own) <= 0.01, (reported["teacher"], own)
    assert own > 0.8
    assert any("'raw' pixels" in line for line in report["headline"])

    # The student: trained from the file, quantized and exported like a registered one.
    card = json.loads((run / "tflite" / "model_card.json").read_text())
    assert {"student_float32", "student_int8", "student_qad_int8"} <= set(card["variants"])
    assert card["keras3"]["file"] == "student_float_keras3.keras"
    assert any("student_float_keras3.keras" in line for line in report["headline"])

    # The Keras 3 copy loads where tfkd was never imported and computes the shipped student.
    shipped = results["select"]["shipped"]
    float_student = tfkd.keras.models.load_model(run / shipped / f"{shipped}.keras", safe_mode=True)
    inputs = splits.preprocessing.normalize(test_images[:16]).numpy()
    np.save(tmp_path / "inputs.npy", inputs)
    code = (
        "import sys, numpy as np, keras\n"
        "m = keras.saving.load_model(sys.argv[1])\n"
        "np.save(sys.argv[3], np.asarray(m(np.load(sys.argv[2]))))\n"
        "assert 'tfkd' not in sys.modules and 'tf_keras' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(run / "tflite" / card["keras3"]["file"]),
            str(tmp_path / "inputs.npy"),
            str(tmp_path / "outputs.npy"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "outputs.npy"), float_student(inputs, training=False).numpy(), atol=1e-5
    )


@pytest.mark.parametrize(
    "student, message",
    [
        ("missing.keras", "does not exist"),
    ],
)
def test_a_bad_student_file_is_named_before_anything_is_written(tmp_path, student, message):
    with pytest.raises(ValueError, match=f"--student={student}.*{message}"):
        Config(out_dir=str(tmp_path / "run"), student=student)
    assert not (tmp_path / "run").exists()


class _Doubler(k3.layers.Layer):
    def call(self, x):
        return 2.0 * x


def _student_file(tmp_path, name, last):
    """A Keras 3 student file whose last layers are `last(tensor)`."""
    inputs = k3.Input((8, 8, 1))
    path = tmp_path / f"{name}.keras"
    k3.Model(inputs, last(inputs), name=name).save(path)
    return str(path)


@pytest.mark.parametrize(
    "name, last, message",
    [
        (
            "soft",
            lambda x: k3.layers.Dense(10, activation="softmax")(k3.layers.Flatten()(x)),
            "last layer .* applies a softmax",
        ),
        (
            "grouped",
            lambda x: k3.layers.Dense(10)(
                k3.layers.Flatten()(
                    k3.layers.GroupNormalization(groups=1, name="gn")(k3.layers.Conv2D(4, 3)(x))
                )
            ),
            r"without an exact twin in the other Keras: gn \(GroupNormalization\)",
        ),
        (
            "shifted",
            lambda x: k3.layers.Dense(10)(
                k3.layers.Flatten()(k3.layers.Lambda(lambda t: t + 1.0, name="shift")(x))
            ),
            "[Ll]ambda",
        ),
        (
            "custom",
            lambda x: k3.layers.Dense(10)(k3.layers.Flatten()(_Doubler(name="twice")(x))),
            r"Student .* holds custom objects .*_Doubler",
        ),
    ],
    ids=["softmax", "layer_without_a_twin", "lambda", "custom_layer"],
)
def test_a_student_file_that_cannot_be_trained_is_refused_before_training(
    tmp_path, name, last, message
):
    config = Config(out_dir=str(tmp_path / "run"), student=_student_file(tmp_path, name, last))
    with pytest.raises(ValueError, match=f"--student=.*{name}.keras: .*{message}"):
        scheduler.execute(config)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_cifar10_recipe_with_a_keras3_student_ships_an_int8_file_mediapipe_loads(
    tmp_path, mediapipe_python
):
    """The CIFAR-10 recipe (its flagfile, as a user runs it) on the real image sample, with a
    Keras 3 student file: int8 with uint8 input as apps feed it, a report of every model, and
    MediaPipe's ImageClassifier, the client apps use, loads the QAD file, names its categories
    with the run's labels, and picks what tfkd's own LiteRT run picks."""
    from tests.conftest import CIFAR_SAMPLE
    from tests.test_metadata import _cifar_sample, mediapipe_classify
    from tests.test_pipeline import _main

    inputs = k3.Input((32, 32, 3))
    x = k3.layers.Conv2D(16, 3, strides=2, padding="same")(inputs)
    x = k3.layers.Activation("hard_swish")(k3.layers.BatchNormalization()(x))
    x = k3.layers.GlobalAveragePooling2D()(x)
    k3.Model(inputs, k3.layers.Dense(10)(x), name="rgb_student").save(tmp_path / "s.keras")
    run = tmp_path / "run"
    result = _main(
        "--flagfile=pipelines/configs/cifar10.flags",
        f"--dataset=folder:{CIFAR_SAMPLE}",
        "--teacher=resnet8",
        f"--student={tmp_path / 's.keras'}",
        "--teacher_epochs=1",
        "--student_epochs=1",
        "--qat_epochs=1",
        "--modes=int8_io_uint8",
        "--representative_size=10",
        "--max_drop_points=100",
        "--threads=1",
        "--benchmark_runs=2",
        f"--out_dir={run}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run / "report.json").read_text())
    assert report["dataset"].startswith("folder:") and len(report["models"]) == 7
    card = json.loads((run / "tflite" / "model_card.json").read_text())
    assert card["labels"][:2] == ["airplane", "automobile"]
    entry = card["variants"]["student_qad_int8_io_uint8"]
    images, _, classes = _cifar_sample()
    model = str(run / "tflite" / entry["file"])
    classified = mediapipe_classify(mediapipe_python, images, tmp_path, [model])[model]
    assert "error" not in classified, classified.get("error")
    mediapipe_top1 = [max(c, key=lambda c: c["score"])["index"] for c in classified["images"]]
    assert all(
        sorted(c["name"] for c in categories) == sorted(classes)
        for categories in classified["images"]
    )
    normalized = tfkd.data.load(f"folder:{CIFAR_SAMPLE}").preprocessing.normalize(images)
    tfkd_top1 = (
        tfkd.measure.runtime.TFLiteClassifier(model).predict(normalized.numpy()).argmax(axis=1)
    )
    assert np.mean(np.array(mediapipe_top1) == tfkd_top1) >= 0.99


def test_both_students_start_from_the_student_files_weights(tmp_path):
    from pipelines.context import Context

    model = _keras3_student()
    model.save(tmp_path / "student.keras")
    ctx = Context(Config(out_dir=str(tmp_path / "run"), student=str(tmp_path / "student.keras")))
    for fresh in (ctx.fresh_student(), ctx.fresh_student()):  # the baseline's, the distilled's
        assert fresh.name == "app_student"
        for mine, theirs in zip(model.get_weights(), fresh.get_weights()):
            np.testing.assert_array_equal(mine, theirs)
