"""Test-session set-up: two logical CPU devices, so tf.distribute tests run on one CPU."""

import atexit
import gc
import json
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Decoded-image disk caches of the tests (and of the programs they start) stay out of ~/.cache,
# and go with the session.
os.environ["TFKD_CACHE"] = tempfile.mkdtemp(prefix="tfkd-test-cache-")
atexit.register(shutil.rmtree, os.environ["TFKD_CACHE"], ignore_errors=True)

import tensorflow as tf  # noqa: E402

# Logical devices can only be configured before the TensorFlow runtime starts, so this happens
# at collection time for the whole session; single-device code keeps using the first one.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import pytest  # noqa: E402

from tfkd.keras import keras  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
CIFAR_SAMPLE = os.path.join(FIXTURES, "cifar10_sample")


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture(autouse=True)
def _stages_read_only_the_settings_they_declare(request):
    """After every test with a `tmp_path`: each stage of each run made there read only the
    settings it or a stage upstream of it declares (the manifest records what it read), so a
    changed setting always reruns the stages whose results depend on it."""
    if "tmp_path" not in request.fixturenames:
        yield
        return
    root = request.getfixturevalue("tmp_path")
    yield
    from pipelines import stages

    for manifest in root.rglob("manifest.json"):
        recorded = json.loads(manifest.read_text()).get("stages", {})
        undeclared = {
            stage: sorted(stages.undeclared_reads(stage, entry.get("reads", ())))
            for stage, entry in recorded.items()
        }
        undeclared = {stage: names for stage, names in undeclared.items() if names}
        assert not undeclared, f"{manifest}: stages read settings they do not declare: {undeclared}"


@pytest.fixture(scope="session")
def mediapipe_python() -> str:
    """The interpreter of MediaPipe Tasks, the client Android apps use (its own virtualenv:
    scripts/test makes it; TFKD_MEDIAPIPE_PYTHON points elsewhere)."""
    python = os.environ.get(
        "TFKD_MEDIAPIPE_PYTHON", os.path.join(ROOT, ".venv-mediapipe", "bin", "python")
    )
    if not os.path.exists(python):
        pytest.fail(
            f"No MediaPipe client at {python}: ./scripts/test creates it "
            "(.venv-mediapipe), or set TFKD_MEDIAPIPE_PYTHON."
        )
    return python


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over the two logical CPU devices, shared by the whole session: a
    second instance in the same process restarts its collective instance keys and its
    all-reduces collide with the first one's ("Shape mismatch in the collective instance")."""
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, "two logical CPU devices are configured above"
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])


# Seconds each of the heaviest files took in the whole suite on a 2-core CPU (scripts/test,
# --durations, session 16). pytest-xdist hands out whole files (--dist loadfile,
# --no-loadscope-reorder in pytest.ini) in collection order; starting the longest first keeps one
# worker from running a two-minute file alone at the end (longest-processing-time-first
# scheduling). Only the order depends on these figures.
HEAVIEST_FILES_SECONDS = {
    "test_pipeline.py": 183,
    "test_search.py": 138,
    "test_detection_pipeline.py": 111,
    "test_benchmarks.py": 81,
    "test_pipeline_kills.py": 76,
    "test_distribute.py": 75,
    "test_models.py": 63,
    "test_photos_pipeline.py": 53,
    "test_failures.py": 46,
    "test_own_models.py": 42,
    "test_keras3.py": 39,
    "test_export.py": 29,
    "test_readme.py": 25,
    "test_stage_isolation.py": 24,
    "test_detection_training.py": 21,
    "test_detection_models.py": 19,
    "test_data.py": 18,
    "test_images.py": 17,
    "test_distiller.py": 16,
    "test_programs.py": 14,
}


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: -HEAVIEST_FILES_SECONDS.get(item.path.name, 0))


def pytest_collection_finish(session):
    # The runs a test makes in this process collect after each training stage
    # (pipelines/scheduler.py); with the imports and the collected tests frozen, those
    # collections go through what the tests made alone, as a program's go through its run's.
    del session
    gc.collect()
    gc.freeze()
