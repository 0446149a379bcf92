import os
import pathlib
import re
import subprocess
import sys

import pytest
import tf_keras

from tfkd.keras import keras

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_tfkd_keras_is_tf_keras_version_2():
    assert keras is tf_keras
    assert keras.__version__.startswith("2.")


def _run(code, legacy=None):
    """`code` in a fresh interpreter, with TF_USE_LEGACY_KERAS unset or set to `legacy`."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    if legacy is not None:
        env["TF_USE_LEGACY_KERAS"] = legacy
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=True,
    ).stdout.strip()


# Each of these starts an interpreter (8 s on 2 cores). The fast suite keeps the everyday case,
# `import tfkd` in a notebook; the import orders and the legacy-Keras user run in the slow one.
@pytest.mark.slow
def test_importing_tensorflow_first_does_not_change_tfkd_keras():
    code = (
        "import tensorflow as tf\n"
        "keras3 = tf.keras.__version__\n"
        "from tfkd.keras import keras\n"
        "import tensorflow_model_optimization as tfmot\n"
        "from tensorflow_model_optimization.python.core.keras.compat import keras as mot_keras\n"
        "print(keras.__version__[0], mot_keras.layers.Dense is keras.layers.Dense, keras3[0])\n"
    )
    assert _run(code).splitlines()[-1] == "2 True 3"


# What a notebook sees after `import tfkd`: its own tf.keras, `import keras` and environment.
_USER_VIEW = (
    "import os\n"
    "import tfkd\n"
    "import tensorflow as tf\n"
    "import keras\n"
    "from tensorflow_model_optimization.python.core.keras.compat import keras as mot_keras\n"
    "print(tf.keras.__name__.split('.')[0], keras.__version__[0],\n"
    "      os.environ.get('TF_USE_LEGACY_KERAS'),\n"
    "      mot_keras.layers.Dense is tfkd.keras.layers.Dense)\n"
)


def test_importing_tfkd_leaves_tf_keras_and_the_environment_to_the_user():
    # TF-MOT still quantizes with tfkd's tf_keras (the last field).
    assert _run(_USER_VIEW).splitlines()[-1] == "keras 3 None True"


@pytest.mark.slow
def test_a_user_who_asks_for_legacy_keras_keeps_it():
    assert _run(_USER_VIEW, legacy="1").splitlines()[-1] == "tf_keras 3 1 True"


def test_nothing_else_imports_keras_directly():
    pattern = re.compile(
        r"^\s*(import keras\b|from keras\b|import tf_keras\b|from tf_keras\b)"
        r"|\btf\.keras\b",
        re.M,
    )
    offenders = []
    for folder in ("tfkd", "pipelines", "tools"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "keras.py" and path.parent.name == "tfkd":
                continue
            if pattern.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
