"""tfkd.distill.teacher_input: each convention's adapter against numpy, and the convention found by
measurement for teachers that expect raw pixels or tfkd's normalisation."""

import numpy as np
import pytest

import tfkd
from tfkd.distill import teacher_input
from tfkd.keras import keras

CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])


def _expected(convention, raw):
    """What each convention feeds a model, from raw RGB pixels, written out independently."""
    return {
        "raw": raw,
        "unit": raw / 255.0,
        "symmetric": raw / 127.5 - 1.0,
        "caffe": raw[..., ::-1] - CAFFE_MEAN_BGR,
    }[convention]


@pytest.mark.parametrize("convention", ["raw", "unit", "symmetric", "caffe"])
def test_the_adapter_turns_normalised_images_into_the_conventions_values(convention):
    prep = tfkd.data.photo_preprocessing((4, 4), 3)
    raw = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype(np.float64)
    inputs = keras.Input((4, 4, 3))
    echo = keras.Model(inputs, keras.layers.Flatten()(inputs), name="echo")
    adapted = teacher_input.with_input(echo, convention, prep)
    assert teacher_input.convention_of(adapted) == convention and not adapted.trainable_weights
    got = adapted(prep.normalize(raw.astype(np.uint8))).numpy()
    np.testing.assert_allclose(got, _expected(convention, raw).reshape(2, -1), atol=1e-3)


def test_tfkds_own_convention_adds_nothing():
    model = tfkd.models.build("cnn_tiny", (8, 8, 1), 10)
    assert (
        teacher_input.with_input(model, "student", tfkd.data.load("digits").preprocessing) is model
    )


def _nearest_centroid(splits, prep, raw_space: bool) -> keras.Model:
    """A teacher that is a nearest-centroid classifier in raw pixels or in tfkd's normalised
    inputs: logits_k = 2 mu_k . v - |mu_k|^2, v the flattened image in that space."""
    images, labels = zip(*splits.train.as_numpy_iterator())
    images = np.stack(images).astype(np.float64)
    space = images if raw_space else prep.normalize(images.astype(np.uint8)).numpy()
    flat = space.reshape(len(space), -1)
    centroids = np.stack([flat[np.array(labels) == k].mean(0) for k in range(10)])
    inputs = keras.Input(prep.input_shape)
    dense = keras.layers.Dense(10)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)), name="centroids")
    dense.set_weights(
        [2 * centroids.T.astype(np.float32), -(centroids**2).sum(1).astype(np.float32)]
    )
    return model, centroids


def test_a_raw_pixel_teacher_is_found_and_measured_as_its_own_framework_would():
    splits = tfkd.data.load("digits")
    prep = splits.preprocessing
    teacher, centroids = _nearest_centroid(splits, prep, raw_space=True)
    validation = tfkd.data.batches(splits.validation, prep, 64)
    choice = teacher_input.choose(teacher, prep, validation)
    assert choice.convention == "raw" and choice.p_value_against_student < 0.05
    images, labels = zip(*splits.validation.as_numpy_iterator())
    raw = np.stack(images).reshape(len(images), -1).astype(np.float64)
    own = np.mean(np.argmin(((raw[:, None] - centroids[None]) ** 2).sum(-1), 1) == labels)
    assert choice.accuracy["raw"] == pytest.approx(own, abs=1e-9)
    assert "'raw' pixels" in choice.message() and "McNemar" in choice.message()


def test_a_teacher_trained_on_tfkds_normalisation_keeps_it():
    splits = tfkd.data.load("digits")
    teacher, _ = _nearest_centroid(splits, splits.preprocessing, raw_space=False)
    choice = teacher_input.choose(
        teacher,
        splits.preprocessing,
        tfkd.data.batches(splits.validation, splits.preprocessing, 64),
    )
    assert choice.convention == "student"
    assert choice.accuracy["student"] >= max(choice.accuracy.values()) - 0.05


def test_caffe_is_not_tried_on_grayscale_and_unknown_conventions_are_refused():
    assert "caffe" not in teacher_input.candidates(1) and "caffe" in teacher_input.candidates(3)
    with pytest.raises(ValueError, match="Available"):
        teacher_input.check("bgr")
