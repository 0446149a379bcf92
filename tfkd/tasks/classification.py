"""Image classification, the task every stage knew until now: top-1 accuracy of Keras models and
`.tflite` files, and the probabilities head an exported classifier ends in."""

from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from tfkd.keras import keras
from tfkd.measure.runtime import TFLiteClassifier


def correct_predictions(model: keras.Model, batches) -> np.ndarray:
    """Whether `model`'s top-1 class is the label, per example of batched `(inputs, labels)`,
    in order: what paired tests (`tfkd.measure.stats`) compare between two models."""
    hits = [
        np.argmax(model(inputs, training=False), axis=-1) == np.asarray(labels)
        for inputs, labels in batches
    ]
    if not hits:
        raise ValueError("Cannot measure accuracy on an empty dataset.")
    return np.concatenate(hits)


def keras_accuracy(model: keras.Model, batches: tf.data.Dataset) -> float:
    """Top-1 accuracy of `model` (logits) over batched `(inputs, labels)`.

    Computed here rather than with `model.evaluate` so it does not depend on how (or whether)
    the model was compiled, and counts every example exactly once.
    """
    correct = total = 0
    for inputs, labels in batches:
        predictions = np.argmax(model(inputs, training=False), axis=-1)
        correct += int(np.sum(predictions == labels.numpy()))
        total += int(labels.shape[0])
    if total == 0:
        raise ValueError("Cannot measure accuracy on an empty dataset.")
    return correct / total


def tflite_accuracy(model: str | bytes, batches: Iterable, num_threads: int | None = None) -> float:
    """Top-1 accuracy of a `.tflite` classifier over batched `(normalised images, labels)`."""
    classifier = TFLiteClassifier(model, num_threads)
    correct = total = 0
    for images, labels in batches:
        predictions = np.argmax(classifier.predict(np.asarray(images)), axis=-1)
        correct += int(np.sum(predictions == np.asarray(labels)))
        total += len(predictions)
    if total == 0:
        raise ValueError("Cannot measure accuracy on an empty dataset.")
    return correct / total


def with_probabilities(model: keras.Model) -> keras.Model:
    """`model` followed by a softmax: an app gets probabilities, not logits."""
    return keras.Model(
        model.inputs, keras.layers.Softmax(name="probabilities")(model.outputs[0]), name=model.name
    )
