"""tfkd: knowledge distillation for TensorFlow/Keras students shipped to mobile."""

from setuptools import find_packages, setup

setup(
    name="tfkd",
    version="0.1.0",
    description="Distil, quantize (QAT while distilling), export to TFLite and measure on mobile.",
    packages=find_packages(include=["tfkd", "tfkd.*", "pipelines", "pipelines.*"]),
    package_data={"pipelines": ["configs/*.flags"]},
    python_requires="==3.11.*",
    install_requires=[
        "tensorflow==2.21.0",
        # TF-MOT only quantizes Keras 2 models: the whole library uses tf_keras (tfkd/keras.py).
        "tf-keras==2.21.0",
        "tensorflow-model-optimization==0.8.1",
        # Keras 3 (TensorFlow's own tf.keras) only behind tfkd.teachers' explicit adapter.
        "keras==3.15.1",
        # .h5 teachers are inspected for Lambda layers before tf_keras loads them.
        "h5py==3.14.0",
        "ai-edge-litert==2.3.0",
        "tensorflow-datasets==4.9.10",
        # tfds needs it to prepare any dataset but does not declare it.
        "importlib-resources==7.1.0",
        # TF-MOT 0.8.1 requires absl-py ~= 1.2.
        "absl-py==1.4.0",
        "numpy==2.4.6",
        "scikit-learn==1.9.1",
        "matplotlib==3.11.2",
        # Training stages write TensorBoard logs into the run directory.
        "tensorboard==2.21.0",
        # Image headers are read (size limits) before TensorFlow decodes anything.
        "pillow==13.0.0",
        # tfkd.metadata writes TFLite metadata flatbuffers.
        "flatbuffers==25.12.19",
        # pipelines.search: Ray Tune runs the trials (on one machine or a cluster), Optuna's
        # multi-objective sampler chooses them.
        "ray[tune]==2.60.0",
        "optuna==5.0.0",
        # Detection: COCO annotations and mAP, never a hand-written mAP.
        "pycocotools==2.0.11",
    ],
    # xdist runs the suite on both cores (pytest.ini). MediaPipe, the client Android apps use,
    # checks exported models in the tests from a virtualenv of its own (scripts/test): it needs
    # absl-py 2, which TF-MOT 0.8.1 refuses.
    # ruff (lint and format) and mypy run before the tests (scripts/test, ruff.toml, mypy.ini).
    extras_require={
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "ruff==0.17.6", "mypy==2.4.1"],
        "mediapipe-client": ["mediapipe==1.2.2"],
    },
)
