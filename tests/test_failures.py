"""The battery of bad inputs and faults: each ends with a non-zero exit, one message that names
the problem and the fix, no traceback, and nothing changed on disk that a user made."""

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from absl import flags
from PIL import Image

import tfkd
from pipelines import config as config_lib
from pipelines import distill, run
from pipelines.context import Context
from tests.helpers import programs
from tfkd.keras import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = (
    "--teacher_epochs=1",
    "--student_epochs=1",
    "--qat_epochs=0",
    "--modes=float32",
    "--benchmark_runs=2",
    "--max_drop_points=100",
)


def _tree(path):
    """Every file under `path` with its hash: what a failed start must leave as it was."""
    found = {}
    if os.path.isfile(path):
        return {"": hashlib.sha256(open(path, "rb").read()).hexdigest()}
    for directory, _, names in os.walk(path):
        for name in names:
            full = os.path.join(directory, name)
            with open(full, "rb") as f:
                found[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return found


def parse_flags(*args) -> list:
    """ARGS parsed into the program's flags, as `python -m pipelines.distill ARGS` parses them."""
    flags.FLAGS.unparse_flags()
    return flags.FLAGS(["distill", *args])


def run_main(capsys, *args):
    """`python -m pipelines.distill ARGS` in this process: (exit status, stderr)."""
    argv = parse_flags(*args)
    try:
        status = distill.main(argv)
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def refused(capsys, out_dir, *args, message):
    """Runs with `args` and checks the refusal; returns stderr."""
    before = _tree(out_dir) if os.path.exists(out_dir) else None
    status, err = run_main(capsys, f"--out_dir={out_dir}", *args)
    assert status not in (0, None), err
    assert "Traceback" not in err
    assert message in err, err
    assert err.count("\n") <= 3, f"one message, not a log dump:\n{err}"
    after = _tree(out_dir) if os.path.exists(out_dir) else None
    assert after == before, "a failed start changed the run directory"
    return err


# Flags ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--student=resnet19", "--student=resnet19 is not a registered model"),
        ("--teacher=/nowhere/teacher.keras", "does not exist"),
        ("--student_loss_weight=2", "--student_loss_weight must be in [0, 1]"),
        ("--modes=float32,int4", "Unknown quantization mode 'int4'"),
        ("--stages=student", "Stage student needs ['teacher']"),
        ("--loss=kld", "Unknown loss 'kld'"),
        ("--features=a:b:kd:1", "'kd' is a logit loss"),
        ("--threads=1,x", "--threads=1,x"),
        (
            "--image_size=8,8",
            "--image_size=8,8: An image size must be two numbers H,W of at least 16",
        ),
        ("--image_size=128", "--image_size=128: An image size must be two numbers H,W"),
        ("--image_size=128,abc", "--image_size=128,abc: invalid literal for int()"),
        ("--teacher_image_size=160,160", "--teacher_image_size needs --image_size too"),
        (
            "--teacher=keras_applications:EfficientNetV9",
            "'EfficientNetV9' is not a "
            "keras.applications model tfkd knows. Available: keras_applications:ConvNeXtBase",
        ),
        (
            "--teacher_weights=/nowhere/backbone.h5",
            "--teacher_weights=/nowhere/backbone.h5 does "
            "not exist. Give imagenet or an .h5 weights file",
        ),
        ("--teacher_weights=imagenet", "--teacher=cnn_large has no ImageNet weights"),
        (
            "--student_weights=imagenet",
            "--student=cnn_small has no ImageNet weights. Students with them: ['mobilenet_v2_0.35'",
        ),
    ],
)
def test_bad_flags_end_in_one_line_before_anything_is_written(tmp_path, capsys, flag, message):
    out = str(tmp_path / "run")
    refused(capsys, out, *FAST, flag, message=message)
    assert not os.path.exists(out)


# Images ----------------------------------------------------------------------------------------


def _folder(root, per_class=4, classes=("cat", "dog"), size=(12, 10)):
    """A tiny image folder dataset: root/train/<class>/<i>.png, random pixels."""
    rng = np.random.default_rng(0)
    for name in classes:
        os.makedirs(root / "train" / name, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "bad_file, content, message",
    [
        ("zero.jpg", b"", "zero.jpg"),
        ("truncated.jpg", None, "truncated.jpg"),
        ("notes.jpg", b"these are my notes, not an image", "notes.jpg"),
    ],
)
def test_unreadable_images_are_named_before_training(tmp_path, capsys, bad_file, content, message):
    root = _folder(tmp_path / "photos")
    if content is None:
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buffer, "JPEG")
        content = buffer.getvalue()[:100]
    (root / "train" / "cat" / bad_file).write_bytes(content)
    err = refused(capsys, str(tmp_path / "run"), f"--dataset=folder:{root}", *FAST, message=message)
    assert "delete" in err or "re-encode" in err


def test_an_empty_class_folder_is_refused(tmp_path, capsys):
    root = _folder(tmp_path / "photos")
    os.makedirs(root / "train" / "bird")
    refused(
        capsys,
        str(tmp_path / "run"),
        f"--dataset=folder:{root}",
        *FAST,
        message="['bird'] have no training images",
    )


def test_a_representative_set_too_large_for_the_folder_is_refused_before_training(
    tmp_path, capsys, caplog
):
    """The export's calibration set is checked against the training split up front: an explicit
    size that cannot be filled names the flag and the largest that fits, with nothing trained;
    the default shrinks to fit and says so in one line."""
    root = _folder(tmp_path / "photos", per_class=12)
    args = (f"--dataset=folder:{root}", "--image_size=16,16", *FAST)
    refused(
        capsys,
        str(tmp_path / "run"),
        *args,
        "--modes=float32,int8",
        "--representative_size=150",
        message="--representative_size=150: the training split can fill a class-balanced "
        "representative set of at most",
    )
    assert not (tmp_path / "run").exists()
    # The default adapts while the run's context is made, before the first stage: no need to
    # train anything to see it.
    parse_flags(f"--out_dir={tmp_path / 'run'}", *args, "--modes=int8")
    context = Context(config_lib.from_flags())
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    adapted = [
        re.search(
            r"--representative_size: the training split fills at most (\d+) of the default 200", w
        )
        for w in warnings
    ]
    sizes = [int(m.group(1)) for m in adapted if m]
    assert len(sizes) == 1 and 2 <= sizes[0] < 24, warnings  # 24 images in the folder
    assert context.representative_size == sizes[0]


def test_a_class_with_one_image_is_refused_with_the_count_needed(tmp_path, capsys):
    root = _folder(tmp_path / "photos")
    os.makedirs(root / "train" / "bird")
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(root / "train" / "bird" / "0.png")
    refused(
        capsys,
        str(tmp_path / "run"),
        f"--dataset=folder:{root}",
        *FAST,
        message="'bird' has 1 training image",
    )


def test_a_huge_image_is_refused_without_decoding_it(tmp_path, capsys):
    root = _folder(tmp_path / "photos")
    # 20000 x 20000 pixels, about 1.2 GB decoded; a few hundred KB as a PNG of one colour.
    Image.new("L", (20000, 20000)).save(root / "train" / "cat" / "huge.png", optimize=False)
    refused(
        capsys,
        str(tmp_path / "run"),
        f"--dataset=folder:{root}",
        *FAST,
        message="huge.png is 20000x20000",
    )


def test_a_typo_in_the_folder_leaves_nothing_and_the_corrected_run_starts(tmp_path, capsys):
    out = str(tmp_path / "run")
    refused(capsys, out, f"--dataset=folder:{tmp_path / 'typo'}", *FAST, message="does not exist")
    assert not os.path.exists(out)
    status, err = run_main(
        capsys, f"--out_dir={out}", "--dataset=digits", "--stages=teacher", *FAST
    )
    assert status == 0, err


def test_an_unknown_dataset_name_is_the_message_not_the_run_directory(tmp_path, capsys):
    out = str(tmp_path / "run")
    refused(capsys, out, "--dataset=digitz", *FAST, message="digitz")
    assert not os.path.exists(out)


# Teacher files ------------------------------------------------------------------------------


def _saved_teacher(tmp_path, classes=10, shape=(8, 8, 1), name="teacher.keras"):
    inputs = keras.Input(shape)
    model = keras.Model(inputs, keras.layers.Dense(classes)(keras.layers.Flatten()(inputs)))
    path = tmp_path / name
    model.save(path)
    return path


def _rewrite_keras_config(path, change):
    """Rewrites the config.json inside a .keras zip with `change(config)`."""
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    config = json.loads(members["config.json"])
    change(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("not_a_zip", "not a zip archive"),
        ("truncated", "not a zip archive"),
        ("empty", "not a zip archive"),
        ("lambda", "Lambda"),
        ("custom_object", "custom"),
        ("h5_garbage", "teacher.h5"),
        ("saved_model_garbage", "saved"),
        ("wrong_classes", "emits 5 logits but dataset 'digits' has 10 classes"),
        ("wrong_shape", "input"),
    ],
)
def test_bad_teacher_files_are_refused_in_one_line(tmp_path, capsys, kind, message):
    if kind in ("not_a_zip", "empty"):
        path = tmp_path / "teacher.keras"
        path.write_bytes(b"" if kind == "empty" else b"<html>404 not found</html>")
    elif kind == "truncated":
        path = _saved_teacher(tmp_path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "lambda":
        inputs = keras.Input((8, 8, 1))
        outputs = keras.layers.Dense(10)(
            keras.layers.Flatten()(keras.layers.Lambda(lambda x: x * 2)(inputs))
        )
        path = tmp_path / "teacher.keras"
        keras.Model(inputs, outputs).save(path)
    elif kind == "custom_object":
        path = _saved_teacher(tmp_path)

        def make_custom(config):
            layer = config["config"]["layers"][-1]
            layer["class_name"], layer["module"] = "MyFancyDense", "my_company.layers"
            layer["registered_name"] = "my_company>MyFancyDense"

        _rewrite_keras_config(path, make_custom)
    elif kind == "h5_garbage":
        path = tmp_path / "teacher.h5"
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    elif kind == "saved_model_garbage":
        path = tmp_path / "saved"
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"not a protobuf")
    elif kind == "wrong_classes":
        path = _saved_teacher(tmp_path, classes=5)
    else:
        path = _saved_teacher(tmp_path, shape=(9, 9, 1))
    before = _tree(str(path))
    err = refused(capsys, str(tmp_path / "run"), f"--teacher={path}", *FAST, message=message)
    assert str(path) in err
    assert _tree(str(path)) == before


# The output location and concurrent runs ----------------------------------------------------


def test_an_out_dir_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    refused(capsys, str(target), *FAST, message="is a file")
    assert target.read_text() == "mine"


@contextlib.contextmanager
def _tmpfs(path, options):
    """A tmpfs mounted at `path` with mount `options` (the tests run as root, as CI does)."""
    path.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.fail(f"cannot mount a tmpfs ({options}) here: the test needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_read_only_out_dir_is_refused_before_training(tmp_path, capsys):
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as mount:
        refused(capsys, str(mount / "run"), *FAST, message="not writable")


def test_a_second_run_on_the_same_out_dir_is_refused_naming_the_first(tmp_path, capsys):
    out = tmp_path / "run"
    with run.RunLock(str(out)):
        err = refused(capsys, str(out), *FAST, message=f"pid {os.getpid()}")
        assert "--out_dir" in err
    status, err = run_main(capsys, f"--out_dir={out}", "--stages=teacher", *FAST)
    assert status == 0, err


def test_a_full_disk_ends_cleanly_and_leaves_no_half_written_file(tmp_path, capsys):
    # Room for the manifest and logs, not for the teacher (about 6.6 MB as .keras).
    with _tmpfs(tmp_path / "small", "size=2m") as mount:
        status, err = run_main(capsys, f"--out_dir={mount / 'run'}", "--stages=teacher", *FAST)
        assert status == 2 and "Traceback" not in err
        assert "No space left" in err and "--out_dir" in err
        leftovers = [p for p in (mount / "run").rglob("*") if ".tmp" in p.name]
        assert not leftovers and not (mount / "run" / "teacher" / "teacher.keras").exists()


# Training faults ----------------------------------------------------------------------------


def test_a_nan_loss_stops_naming_the_stage_and_epoch_and_keeps_the_last_good_state(
    tmp_path, capsys
):
    out = tmp_path / "run"
    status, err = run_main(
        capsys,
        f"--out_dir={out}",
        "--stages=teacher",
        "--teacher_epochs=3",
        "--optimizer=sgd",
        "--learning_rate=1e25",
    )
    assert status == 2 and "Traceback" not in err
    assert "Stage teacher" in err and "epoch 1" in err and "--learning_rate" in err
    assert not (out / "teacher" / "teacher.keras").exists()


# The two below start fresh interpreters, 8 s each: slow. Not forked (tests/helpers/programs.py):
# the one line must hold with TensorFlow's start-up in the same process. In process, the same
# one-line handling is test_bad_flags_end_in_one_line_before_anything_is_written, and a corrupt
# file is tests/test_evaluate.py's test_truncated_real_model_gives_a_clear_error.
@pytest.mark.slow
def test_a_flagfile_that_does_not_exist_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.distill", f"--flagfile={tmp_path / 'nope.flags'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode != 0
    assert "nope.flags" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_corrupt_tflite_file_is_one_line_in_every_tool(tmp_path):
    # A file with the .tflite identifier but no model in it, and one without even that.
    bad, zeros = tmp_path / "bad.tflite", tmp_path / "zeros.tflite"
    bad.write_bytes(b"TFL3" + b"\0" * 64)
    zeros.write_bytes(b"\0" * 16)
    for tool, args in (
        ("tools/tflite_inspect.py", [str(zeros)]),
        ("tools/benchmark_tflite.py", [str(bad), "--runs=2"]),
    ):
        result = subprocess.run(
            [sys.executable, tool, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )
        assert result.returncode == 2, (tool, result.stderr[-2000:])
        assert "not a valid .tflite model" in result.stderr, tool
        assert "Traceback" not in result.stderr, tool


# Slow: it trains a teacher on them (5 s). The fast suite decodes the same colour modes and formats
# (tests/test_images.py::test_colour_modes_and_formats_become_rgb).
@pytest.mark.slow
def test_unusual_but_valid_images_and_names_load_as_rgb(tmp_path, capsys):
    """16-bit PNG, CMYK JPEG, a non-UTF-8 file name and spaces: all load, as Pillow sees them."""
    root = _folder(tmp_path / "photos")
    rng = np.random.default_rng(1)
    sixteen = rng.integers(0, 65535, (12, 10)).astype(np.uint16)
    Image.fromarray(sixteen).save(root / "train" / "cat" / "sixteen bit.png")
    rgb = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
    # Smooth, so that JPEG decoders agree to a level or two (they differ on noise).
    across, down = np.meshgrid(np.linspace(0, 250, 10), np.linspace(30, 200, 12))
    smooth = np.stack([across, down, np.full((12, 10), 90.0)], axis=-1).astype(np.uint8)
    Image.fromarray(smooth).convert("CMYK").save(root / "train" / "cat" / "cmyk.jpg", quality=100)
    odd = os.path.join(os.fsencode(root / "train" / "dog"), b"caf\xe9.png")
    with open(odd, "wb") as f:
        Image.fromarray(rgb).save(f, "PNG")
    splits = tfkd.data.load(f"folder:{root}", validation_fraction=0.2)
    assert sum(splits.sizes.values()) == 11
    decoded = {}
    for name, path in (
        ("sixteen", root / "train" / "cat" / "sixteen bit.png"),
        ("cmyk", root / "train" / "cat" / "cmyk.jpg"),
        ("odd", odd),
    ):
        import tensorflow as tf

        decoded[name] = (
            tf.io.decode_image(
                tf.io.read_file(os.fsencode(path)), channels=3, expand_animations=False
            )
            .numpy()
            .astype(int)
        )
    reference = np.round(sixteen / 257).astype(int)
    assert np.abs(decoded["sixteen"] - reference[..., None]).max() <= 1
    # The RGB it was made from, up to JPEG's loss (inverted or unconverted CMYK is ~100 off).
    assert np.abs(decoded["cmyk"] - smooth.astype(int)).mean() < 6
    np.testing.assert_array_equal(decoded["odd"], rgb)
    status, err = run_main(
        capsys,
        f"--out_dir={tmp_path / 'run'}",
        f"--dataset=folder:{root}",
        "--teacher=cnn_tiny",
        "--stages=teacher",
        *FAST,
    )
    assert status == 0, err


def test_digits_refuses_an_image_size(tmp_path, capsys):
    refused(
        capsys,
        str(tmp_path / "run"),
        *FAST,
        "--image_size=32,32",
        message="digits images are 8x8; other image sizes are not supported",
    )


def test_imagenet_weights_without_network_say_where_to_put_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    root = _folder(tmp_path / "photos", size=(20, 20))
    err = refused(
        capsys,
        str(tmp_path / "run"),
        *FAST,
        f"--dataset=folder:{root}",
        "--image_size=32,32",
        "--teacher=keras_applications:MobileNetV3Small",
        "--teacher_weights=imagenet",
        message="the ImageNet weights could not be downloaded (no network?)",
    )
    assert f"{tmp_path}/keras/models/weights_mobilenet_v3_small_224_1.0_float_no_top" in err


def test_a_teacher_weights_file_of_other_shapes_is_refused_before_training(tmp_path, capsys):
    root = _folder(tmp_path / "photos", size=(20, 20))
    # Weights saved from a narrower backbone: every layer name matches, the shapes do not.
    narrow = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), alpha=0.75, include_top=False, weights=None
    )
    narrow.save_weights(str(tmp_path / "narrow.h5"))
    err = refused(
        capsys,
        str(tmp_path / "run"),
        *FAST,
        f"--dataset=folder:{root}",
        "--image_size=32,32",
        "--teacher=keras_applications:MobileNetV3Small",
        f"--teacher_weights={tmp_path / 'narrow.h5'}",
        message="does not fit the keras_applications:MobileNetV3Small "
        "'mobilenetv3small': layer 'expanded_conv_3/project' has weights of "
        "shapes [(1, 1, 96, 40)] but the file holds [(1, 1, 96, 32)]",
    )
    assert "Fix: give weights saved from the same architecture" in err


def test_a_teacher_resolution_below_the_students_is_allowed_with_a_warning(
    tmp_path, capsys, caplog
):
    root = _folder(tmp_path / "photos", size=(20, 20))
    status, err = run_main(
        capsys,
        *FAST,
        f"--dataset=folder:{root}",
        "--image_size=32,32",
        "--teacher_image_size=16,16",
        "--stages=teacher",
        f"--out_dir={tmp_path / 'run'}",
    )
    assert status in (0, None), err
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        "--teacher_image_size=16x16 is smaller than the student's 32x32" in w for w in warnings
    ), warnings


def test_a_class_in_val_but_not_in_train_is_refused(tmp_path, capsys):
    root = _folder(tmp_path / "photos")
    _folder(root / "val_source", classes=("cat", "bird"))
    os.rename(root / "val_source" / "train", root / "val")
    refused(
        capsys,
        str(tmp_path / "run"),
        f"--dataset=folder:{root}",
        *FAST,
        message="val has classes that train/ does not: ['bird']",
    )


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_without_a_traceback(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    process = programs.start(
        "pipelines.distill",
        ["--teacher_epochs=200", "--stages=teacher", f"--out_dir={out}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    backup = out / "checkpoints" / "teacher"
    deadline = time.time() + 300
    while not (backup.exists() and any(backup.rglob("*.index"))):
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=300)
    _, err = process.output()
    assert process.returncode == 130, err[-2000:]
    assert "Rerun the same command to resume" in err and "Traceback" not in err
