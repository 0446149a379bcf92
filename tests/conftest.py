"""Test-session set-up: two logical CPU devices, so tf.distribute tests run on one CPU."""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Decoded-image disk caches of the tests (and of the programs they start) stay out of ~/.cache.
os.environ["TFKD_CACHE"] = tempfile.mkdtemp(prefix="tfkd-test-cache-")

import tensorflow as tf  # noqa: E402

# Logical devices can only be configured before the TensorFlow runtime starts, so this happens
# at collection time for the whole session; single-device code keeps using the first one.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import pytest  # noqa: E402

from tfkd.keras import keras  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
CIFAR_SAMPLE = os.path.join(FIXTURES, "cifar10_sample")


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over the two logical CPU devices, shared by the whole session: a
    second instance in the same process restarts its collective instance keys and its
    all-reduces collide with the first one's ("Shape mismatch in the collective instance")."""
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, "two logical CPU devices are configured above"
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
