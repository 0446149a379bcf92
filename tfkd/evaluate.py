"""Accuracy of models on a dataset split."""

import numpy as np
import tensorflow as tf

from tfkd.keras import keras


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
