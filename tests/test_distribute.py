import functools
import json
import os
import signal
import socket
import subprocess

import numpy as np
import pytest
import tensorflow as tf

import tfkd
from pipelines import workers
from tests.helpers import kill_at, programs
from tfkd import quantize
from tfkd.data import Preprocessing
from tfkd.distill import teacher_cache
from tfkd.keras import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (8, 8, 1)
PREP = Preprocessing(image_size=(8, 8), channels=1, scale=1 / 255, mean=(0.5,), std=(0.25,))


def conv_net(name, seed):
    """No batch norm: per-replica batch statistics would differ from one device by design."""
    initializer = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(
        4, 3, activation="relu", kernel_initializer=initializer, name=f"{name}_conv"
    )(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, kernel_initializer=initializer, name=f"{name}_logits")(x)
    return keras.Model(inputs, outputs, name=name)


def raw_data(n=64):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, *SHAPE), dtype=np.uint8)
    labels = rng.integers(0, 3, size=n).astype(np.int64)
    return tf.data.Dataset.from_tensor_slices((images, labels))


def _one_epoch(strategy, variant):
    dataset = raw_data()
    with strategy.scope():
        student, teacher = conv_net("student", 0), conv_net("teacher", 1)
        if variant == "qad":
            student = quantize.quantize_student(student)
        cached = variant == "cache"
        distiller = tfkd.Distiller(student, None if cached else teacher, student_loss_weight=0.3)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    if cached:
        cache = teacher_cache.build(teacher, dataset, PREP)
        data = teacher_cache.batches(cache, dataset, PREP, 16)
    else:
        data = tfkd.data.batches(dataset, PREP, 16)
    updates, logs = _fit_one_epoch(distiller, student, data)
    return updates, logs["loss"]


def _fit_one_epoch(trainer, student, data):
    """The change one epoch of `trainer.fit` on `data` makes to `student`'s weights, and the
    epoch's logs."""
    initial = student.get_weights()
    history = trainer.fit(data, epochs=1, verbose=0).history
    updates = [after - before for before, after in zip(initial, student.get_weights())]
    return updates, {name: values[0] for name, values in history.items()}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["distill", "cache", "qad"])
def test_mirrored_on_two_devices_matches_one_device(variant, mirrored_strategy):
    single_updates, single_loss = _one_epoch(tf.distribute.get_strategy(), variant)
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    strategy = mirrored_strategy
    mirrored_updates, mirrored_loss = _one_epoch(strategy, variant)
    assert len(single_updates) == len(mirrored_updates)
    # The float steps agree to float rounding. QAT's activation ranges are running statistics
    # of each replica's half batch, so QAD agrees to a few percent of the update; a wrong
    # per-replica loss scale would double the update (an error of 100%).
    tolerance = 0.05 if variant == "qad" else 1e-3
    for expected, got in zip(single_updates, mirrored_updates):
        if np.linalg.norm(expected) > 0:
            assert np.linalg.norm(got - expected) <= tolerance * np.linalg.norm(expected)
    assert mirrored_loss == pytest.approx(single_loss, rel=tolerance)


def _tiny_detector(name, seed):
    """One convolution over 4x4 images and two 1x1 heads (one anchor per cell, two classes and
    the background), no batch norm (as conv_net)."""
    initializer = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(
        8, 3, padding="same", activation="relu", kernel_initializer=initializer
    )(inputs)
    boxes = keras.layers.Conv2D(4, 1, kernel_initializer=initializer)(x)
    scores = keras.layers.Conv2D(3, 1, kernel_initializer=initializer)(x)
    outputs = [keras.layers.Reshape((-1, 4))(boxes), keras.layers.Reshape((-1, 3))(scores)]
    return keras.Model(inputs, outputs, name=name)


def _detector_epoch(strategy, distilled):
    from tfkd.tasks.detection import models

    rng = np.random.default_rng(0)
    count, anchors = 32, 16
    images = rng.normal(size=(count, 4, 4, 3)).astype(np.float32)
    # About one anchor in eight positive: the replicas' halves hold different numbers of them.
    labels = np.where(
        rng.uniform(size=(count, anchors)) < 0.125, rng.integers(1, 3, (count, anchors)), 0
    )
    encodings = rng.normal(size=(count, anchors, 4)).astype(np.float32)
    anchor_boxes = np.concatenate(
        [rng.uniform(0.2, 0.8, (anchors, 2)), rng.uniform(0.1, 0.3, (anchors, 2))], 1
    )
    with strategy.scope():
        student = _tiny_detector("student", 0)
        if distilled:
            trainer = models.DetectionDistiller(
                student, _tiny_detector("teacher", 1), anchor_boxes, 0.5
            )
        else:
            trainer = models.DetectorTrainer(student)
        trainer.compile(optimizer=keras.optimizers.SGD(0.5))
    data = tf.data.Dataset.from_tensor_slices((images, (labels, encodings))).batch(16)
    return _fit_one_epoch(trainer, student, data)


@pytest.mark.slow  # as the classification case (the fast suite trains detectors on one device)
@pytest.mark.parametrize("distilled", [False, True], ids=["alone", "distilled"])
def test_a_detector_trains_on_two_mirrored_devices_as_on_one(distilled, mirrored_strategy):
    """Detection losses are normalised by the batch's positive anchors and the teacher's
    foreground weight, which differ between the replicas' halves: each replica takes its share
    of the global count, so the summed step and logs are one device's."""
    single_updates, single_logs = _detector_epoch(tf.distribute.get_strategy(), distilled)
    keras.backend.clear_session()
    mirrored_updates, mirrored_logs = _detector_epoch(mirrored_strategy, distilled)
    for expected, got in zip(single_updates, mirrored_updates):
        assert np.linalg.norm(got - expected) <= 1e-3 * np.linalg.norm(expected)
    assert mirrored_logs == pytest.approx(single_logs, rel=1e-3)


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "needs the cluster in the TF_CONFIG"),
        ("{not json", "not valid JSON"),
        ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "no workers"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "task type 'ps'"),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
            "task index 3",
        ),
    ],
)
def test_multi_worker_configuration_errors_show_an_example(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        tfkd.distill.distribute.make("multi_worker")


def test_unknown_strategy_and_default_is_chief(mirrored_strategy):
    with pytest.raises(ValueError, match="Available"):
        tfkd.distill.distribute.make("horovod")
    default = tfkd.distill.distribute.make("default")
    assert workers.is_chief(default) and not tfkd.distill.distribute.is_distributed(default)
    assert tfkd.distill.distribute.is_distributed(mirrored_strategy)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(out_dir, extra, ports, before_worker1=None):
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    processes = []
    for index in reversed(range(len(ports))):
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="2",
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        log = os.path.join(os.path.dirname(out_dir), f"worker{index}.log")
        flags = [
            "--strategy=multi_worker",
            f"--out_dir={out_dir}",
            "--teacher_epochs=1",
            "--qat_epochs=1",
            "--modes=float32",
            "--max_drop_points=100",
            "--benchmark_runs=3",
            "--collective_timeout=30",
            "--batch_size=128",
            *extra,
        ]
        processes.insert(
            0,
            programs.start(
                "pipelines.distill",
                flags,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                before=before_worker1 if index == 1 else None,
            ),
        )
    return processes


def _finish(processes, timeout=600):
    return [process.wait(timeout=timeout) for process in processes]


def _log(tmp_path, index):
    return (tmp_path / f"worker{index}.log").read_text()


@pytest.mark.slow
def test_two_workers_survive_a_killed_worker_and_write_one_set_of_artifacts(tmp_path):
    """Two worker processes on loopback ports distil with a disk teacher cache; one is killed
    mid-distillation; restarted, the run resumes from its backup and the chief alone writes."""
    out = tmp_path / "run"
    extra = [
        "--student_epochs=2",
        "--loss=kd",  # a fixed loss: the race's own kill is tests/test_pipeline_kills.py's
        "--teacher_cache=disk",
        "--pad_crop=1",
        "--teacher_cache_views=2",
    ]
    # Worker 1 SIGKILLs itself as the distilled student's second epoch ends, after the first
    # epoch's backup: the teacher's 1 and the student alone's 2 epochs end before.
    kill = functools.partial(kill_at.arm, kill_at.EPOCH_END, 1 + 2 + 2)
    codes = _finish(_start_workers(str(out), extra, _free_ports(2), before_worker1=kill))
    assert codes[0] != 0 and codes[1] == -signal.SIGKILL, _log(tmp_path, 0)[-3000:]
    assert "Restart every worker" in _log(tmp_path, 0)
    assert any((out / "checkpoints").glob("student*/**/*.index"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert "student" not in manifest["stages"]

    codes = _finish(_start_workers(str(out), extra, _free_ports(2)))
    chief = _log(tmp_path, 0)
    assert codes == [0, 0], chief[-3000:]
    assert "teacher: finished earlier, unchanged; reused" in chief
    epochs = [line for line in chief.splitlines() if line.strip().startswith("student epoch ")]
    assert epochs and "epoch 1/2 " not in epochs[0], "distillation restarted instead of resuming"
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"teacher", "baseline", "student", "qad", "export", "report"} <= set(manifest["stages"])
    assert (out / "report.md").exists() and (out / "teacher_cache" / "teacher_logits.npy").exists()
    assert "the chief writes the artifacts" in _log(tmp_path, 1)
    # Only the chief's files: no worker scratch or temporary checkpoint directories remain.
    leftovers = [p for p in out.rglob("*") if "scratch" in p.name or "workertemp" in p.name]
    assert leftovers == []
    # Every step used both workers: the chief's run log reports all-reduces over a group of two.
    assert "group_size = 2" in (out / "logs" / "run.log").read_text()
