"""Tests of pipelines/run.py: the manifest, its hashes, and what a start writes."""

import hashlib
import json

from pipelines.run import MANIFEST, RunDirectory


def test_opening_a_run_directory_writes_nothing_until_a_stage_records(tmp_path):
    path = tmp_path / "run"
    directory = RunDirectory(str(path))
    assert not path.exists()
    assert not directory.done("teacher")
    (tmp_path / "run").mkdir()
    (path / "a.txt").write_text("A")
    directory.record("teacher", ["a.txt"], {"accuracy": 0.5})
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["stages"]["teacher"]["outputs"] == {"a.txt": hashlib.sha256(b"A").hexdigest()}
    assert directory.metrics("teacher") == {"accuracy": 0.5}


def test_a_changed_or_missing_output_makes_a_stage_unfinished(tmp_path):
    directory = RunDirectory(str(tmp_path))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(b"\x00\x01")
    directory.record("student", ["model"])
    reopened = RunDirectory(str(tmp_path))
    assert reopened.done("student")
    (tmp_path / "model" / "w.bin").write_bytes(b"\x00\x02")
    assert not reopened.done("student")
    (tmp_path / "model" / "w.bin").unlink()
    assert not reopened.done("student")


def test_forget_drops_later_stages_and_a_reader_never_writes(tmp_path):
    (tmp_path / "f").write_text("x")
    directory = RunDirectory(str(tmp_path))
    directory.record("teacher", ["f"])
    directory.record("student", ["f"])
    directory.forget(["student", "report"])
    assert directory.done("teacher") and not directory.done("student")
    before = (tmp_path / MANIFEST).read_text()
    reader = RunDirectory(str(tmp_path), writable=False)
    reader.record("baseline", ["f"], {"accuracy": 1.0})
    assert reader.done("baseline") and reader.metrics("baseline") == {"accuracy": 1.0}
    assert (tmp_path / MANIFEST).read_text() == before


def test_models_are_saved_whole_and_quantization_aware_ones_as_weights(tmp_path):
    import numpy as np

    import tfkd
    from tfkd import quantize

    directory = RunDirectory(str(tmp_path))
    float_model = tfkd.models.build("cnn_tiny", (8, 8, 1), 10)
    qat = quantize.quantize_student(tfkd.models.build("cnn_tiny", (8, 8, 1), 10))
    assert directory.save_model("student", float_model) == "student/student.keras"
    assert directory.save_model("student_qad", qat) == "student_qad/student_qad_weights.h5"
    assert directory.model_file("student_qad") == "student_qad/student_qad_weights.h5"
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
    loaded = directory.load_model("student", lambda: None)
    np.testing.assert_array_equal(loaded(x), float_model(x))
    rebuilt = directory.load_model(
        "student_qad", lambda: tfkd.models.build("cnn_tiny", (8, 8, 1), 10)
    )
    assert quantize.is_quantization_aware(rebuilt)
    np.testing.assert_allclose(rebuilt(x), qat(x), atol=1e-6)


def test_a_trained_model_is_saved_without_its_optimizer(tmp_path):
    """The optimizer's state is most of a trained model's file and of its loading time; the
    stages after training only predict (an interrupted training resumes from checkpoints)."""
    import zipfile

    import h5py
    import numpy as np
    import tensorflow as tf

    import tfkd
    from tfkd.distill import training

    model = tfkd.models.build("cnn_tiny", (8, 8, 1), 3)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(32, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 3, size=32)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    training.train_classifier(model, data, epochs=1, verbose=0)
    model.save(tmp_path / "whole.keras")  # what Keras writes: the optimizer included
    directory = RunDirectory(str(tmp_path / "run"))
    relative = directory.save_model("teacher", model)

    def groups(path):
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as weights:
            return set(h5py.File(weights, "r").keys())

    assert "optimizer" in groups(tmp_path / "whole.keras")
    assert "optimizer" not in groups(tmp_path / "run" / relative)
    loaded = directory.load_model("teacher", lambda: None)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded(images), model(images))
    # The trained model itself is untouched: still compiled, as its caller left it (evaluate
    # raises on a model that is not).
    assert model.optimizer is not None
    model.evaluate(data, verbose=0)


def test_an_interrupted_command_that_names_stages_says_which_to_name_to_resume(tmp_path):
    """--stages runs what it names again, so "rerun the same command" would redo the named
    stages this command finished: the line names those it had not."""
    import datetime

    from pipelines import scheduler
    from pipelines.config import Config

    earlier = RunDirectory(str(tmp_path))
    for stage in ("teacher", "student", "report"):
        earlier.record(stage, [], {})  # a finished run, before this command
    started = datetime.datetime.now(datetime.UTC)
    named = Config(out_dir=str(tmp_path), stages=("student", "report"))
    # Nothing finished yet: the same command reruns both, the training resuming from its backup.
    assert scheduler._resume_hint(named, started).startswith("Rerun the same command to resume")
    RunDirectory(str(tmp_path)).record("student", [], {})  # this command retrained it
    assert scheduler._resume_hint(named, started).startswith(
        "Resume with --stages=report in place of --stages=student,report (which runs every"
    )
    every = Config(out_dir=str(tmp_path))
    assert scheduler._resume_hint(every, started).startswith("Rerun the same command to resume")


def test_a_command_continuing_in_a_fresh_process_keeps_its_start(monkeypatch):
    """--isolate_stages re-executes the command: its stages finished in earlier processes are
    still this command's."""
    from pipelines import scheduler

    monkeypatch.setenv(scheduler.STARTED, "stale")  # restored when the test ends
    monkeypatch.delenv(scheduler.CONTINUING, raising=False)
    first = scheduler._command_started()
    monkeypatch.setenv(scheduler.CONTINUING, "1")
    assert scheduler._command_started() == first
