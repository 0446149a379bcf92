"""A loaded dataset's train/validation/test splits (`Splits`), and what is done to its training
split: stratified hold-outs, hidden labels (few labels, many images), a share set aside for the
teacher, the labeled examples repeated to a full epoch."""

import dataclasses
import json
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tfkd.data.preprocessing import Preprocessing
from tfkd.data.schema import UNLABELED
from tfkd.keras import keras


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """A loaded dataset: unbatched raw `(image, label)` splits plus what describes them."""

    name: str
    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    sizes: dict
    # Every resolution the images were loaded at: (height, width) -> (train, validation, test),
    # the same examples in the same order.
    resolutions: dict = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def at(self, image_size: Sequence[int]) -> "Splits":
        """These splits at another resolution they were loaded at (`extra_sizes` of `load`)."""
        size = tuple(int(s) for s in image_size)
        if size == tuple(self.preprocessing.image_size):
            return self
        if size not in self.resolutions:
            raise ValueError(
                f"Dataset '{self.name}' was loaded at {list(self.resolutions)}, "
                f"not {size}: load it with extra_sizes=[{size}]."
            )
        train, validation, test = self.resolutions[size]
        return dataclasses.replace(
            self,
            preprocessing=self.preprocessing.at(size),
            train=train,
            validation=validation,
            test=test,
        )

    def check_model(self, model: keras.Model, role: str = "model") -> None:
        """Raises `ValueError` when `model` does not fit this dataset's inputs or classes."""
        outputs = model.output_shape[-1]
        if outputs != self.num_classes:
            raise ValueError(
                f"The {role} '{model.name}' emits {outputs} logits but dataset '{self.name}' has "
                f"{self.num_classes} classes ({list(self.class_names)[:10]}...). Fix: use a "
                f"{role} built for {self.num_classes} classes, or the dataset it was trained on."
            )
        expected = tuple(self.preprocessing.input_shape)
        got = tuple(model.input_shape[1:])
        if any(g is not None and g != e for g, e in zip(got, expected)) or len(got) != 3:
            raise ValueError(
                f"The {role} '{model.name}' takes inputs of shape {got} but dataset "
                f"'{self.name}' yields images of shape {expected}. Fix: build the {role} for "
                f"{expected}, or load the data with a matching `image_size`."
            )

    def describe(self) -> str:
        return json.dumps(
            {"dataset": self.name, "classes": self.num_classes, "sizes": self.sizes}, sort_keys=True
        )


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices `(kept, held_out)` holding out `fraction` of every class, reproducibly.

    Every class with at least two examples gives at least one, and keeps at least one.
    """
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(len(members) - 1, max(1, int(round(len(members) * fraction))))
        held.append(rng.permutation(members)[:count])
    held_out = np.sort(np.concatenate(held))
    kept = np.setdiff1d(np.arange(len(labels)), held_out)
    return kept, held_out


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"`{name}` must be in (0, 1). Received: {name}={value}")


def train_labels(splits: Splits) -> np.ndarray:
    """The training split's labels, in order (`UNLABELED` for examples without one)."""
    return np.fromiter(splits.train.map(lambda image, label: label).as_numpy_iterator(), np.int64)


def _relabel(
    splits: Splits, train_for: Callable[[tf.data.Dataset, tuple], tf.data.Dataset], sizes: dict
) -> Splits:
    """`splits` with `train_for(train, size)` as the training split at every resolution."""
    resolutions = {
        size: (train_for(train, size), validation, test)
        for size, (train, validation, test) in splits.resolutions.items()
    }
    own = tuple(splits.preprocessing.image_size)
    return dataclasses.replace(
        splits, train=resolutions[own][0], resolutions=resolutions, sizes=sizes
    )


def set_aside(splits: Splits, share: float, seed: int = 0) -> tuple[Splits, Splits]:
    """`(rest, aside)`: the training split divided, stratified, with `share` of every class in
    `aside` and the others in `rest`, at every resolution and in their order; validation and
    test are shared. What a teacher pretrained on images the students never see learns from."""
    _check_fraction("share", share)
    labels = train_labels(splits)
    kept, held = stratified_split(labels, share, seed)
    aside = np.zeros(len(labels), bool)
    aside[held] = True
    in_aside = tf.constant(aside)

    def part(wanted: bool, count: int) -> Splits:
        def train_for(train, size):
            del size
            return (
                train.enumerate()
                .filter(lambda index, example: tf.equal(in_aside[index], wanted))
                .map(lambda index, example: example, num_parallel_calls=tf.data.AUTOTUNE)
                .apply(tf.data.experimental.assert_cardinality(count))
            )

        return _relabel(splits, train_for, dict(splits.sizes, train=count))

    logging.info(
        "Set aside %d of %d training examples (%.0f%% per class, seed %d).",
        len(held),
        len(labels),
        100 * share,
        seed,
    )
    return part(False, len(kept)), part(True, len(held))


def hide_labels(splits: Splits, fraction: float, seed: int = 0) -> Splits:
    """`splits` whose training split keeps the labels of a stratified `fraction` of every class
    (at least one per class) and marks the others `UNLABELED`: an experiment with few labels
    and many images, the everyday reason to distil. `sizes["labeled"]` counts the kept ones."""
    _check_fraction("fraction", fraction)
    labels = train_labels(splits)
    if np.any(labels == UNLABELED):
        raise ValueError(
            "The training split already has unlabeled examples: hide labels first, "
            "then add unlabeled images."
        )
    _, labeled = stratified_split(labels, fraction, seed)
    keep = np.zeros(len(labels), bool)
    keep[labeled] = True
    keep = tf.constant(keep)

    def hidden(train, size):
        del size
        return train.enumerate().map(
            lambda index, example: (
                example[0],
                tf.where(keep[index], example[1], tf.constant(UNLABELED, tf.int64)),
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    logging.info(
        "Kept the labels of %d of %d training examples (%.0f%% per class, seed %d).",
        len(labeled),
        len(labels),
        100 * fraction,
        seed,
    )
    return _relabel(splits, hidden, dict(splits.sizes, labeled=len(labeled)))


def labeled_train(splits: Splits) -> tf.data.Dataset:
    """The training examples that carry a label, repeated so that an epoch over them takes as
    many steps as an epoch over the whole training split: the teacher and the student alone,
    which learn from labels only, get the same training budget as the distilled student."""
    total = splits.sizes["train"]
    labeled = splits.sizes.get("labeled", total)
    if labeled == total:
        return splits.train
    kept = splits.train.filter(lambda image, label: label != UNLABELED).apply(
        tf.data.experimental.assert_cardinality(labeled)
    )
    return kept.repeat(max(1, int(round(total / labeled))))
