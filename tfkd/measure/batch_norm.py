"""Batch-normalisation statistics measured for the weights as they are, not Keras' moving
averages, so a model early in training is measured fairly."""

from collections.abc import Iterable

from tfkd.data.schema import split_inputs
from tfkd.keras import keras


def precise_batch_norm(model: keras.Model, images: Iterable, batches: int = 20) -> keras.Model:
    """A copy of `model` whose batch-normalisation statistics are the plain average over
    `batches` batches of `images` (precise BN, Wu & Johnson 2021, "Rethinking 'Batch' in
    BatchNorm"); `model` itself is left as it is.

    Why: Keras keeps moving averages with momentum 0.99, which after a few hundred steps still
    weigh their initial values (0.99**80 = 45%): a model evaluated early in training predicts
    near chance whatever it has learned. Measuring a race's probes needs the statistics of the
    weights as they are. `images` yields input batches (or `(inputs, ...)` tuples, or dicts
    with an "image" key, as the Distiller's batches are).
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    norms = [m for m in copy.submodules if isinstance(m, keras.layers.BatchNormalization)]
    if not norms:
        return copy
    seen = 0
    for batch in images:
        inputs = batch[0] if isinstance(batch, tuple) else batch
        inputs = split_inputs(inputs)[0]
        for norm in norms:
            # A running mean: batch k weighs 1 / (k + 1), the earlier ones the rest.
            norm.momentum = seen / (seen + 1)
        copy(inputs, training=True)
        seen += 1
        if seen == batches:
            break
    if not seen:
        raise ValueError("`images` is empty: no batch to estimate the statistics from.")
    return copy
