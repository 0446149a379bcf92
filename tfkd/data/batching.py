"""Input pipelines: normalised, shuffled, augmented batches for `fit`, and paired batches of
each example at the student's and the teacher's resolution."""

from collections.abc import Sequence

import tensorflow as tf

from tfkd.data import mixing as mixing_lib
from tfkd.data import schema
from tfkd.data.mixing import Mixing
from tfkd.data.preprocessing import Augmentation, Preprocessing
from tfkd.data.schema import UNLABELED
from tfkd.data.splits import Splits

# Offset of the in-batch mixing's seeds from the shuffling and augmentation seed.
MIXING_SEED_OFFSET = 7919


def check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1. Received: {batch_size!r}")


def reshuffled(dataset: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """`dataset` shuffled in a new seeded order every epoch: the whole set when it has at most
    100k elements (a full shuffle), else through a 10k buffer."""
    size = int(dataset.cardinality())
    buffer = size if 0 < size <= 100_000 else 10_000
    return dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)


def _with_example_seeds(dataset: tf.data.Dataset, seed: int, augment) -> tf.data.Dataset:
    """`(augment(inputs, s), label)` with a fresh stateless seed `s` per example, drawn from
    `seed` and different every epoch, reproducibly."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((dataset, seeds)).map(
        lambda example, s: (augment(example[0], s), example[1]), num_parallel_calls=tf.data.AUTOTUNE
    )


def batches(
    dataset: tf.data.Dataset,
    preprocessing: Preprocessing,
    batch_size: int,
    *,
    shuffle: bool = False,
    augmentation: Augmentation | None = None,
    seed: int = 0,
    base_size: Sequence[int] | None = None,
    mixing: Mixing | None = None,
) -> tf.data.Dataset:
    """Normalised, batched, prefetched `(inputs, labels)` for `fit`/`evaluate`.

    Shuffling and augmentation are seeded and differ between epochs, reproducibly. With
    `base_size`, augmentation is drawn as for that size and scaled (`Augmentation.apply_scaled`),
    as `paired_batches` draws it. `mixing` (distillation only) mixes examples within each batch
    and marks the mixed ones `UNLABELED` (`tfkd.data.mixing`).
    """
    check_batch_size(batch_size)
    if shuffle:
        dataset = reshuffled(dataset, seed)
    if augmentation is not None:

        def augment(image, s):
            if base_size is None:
                return augmentation.apply(image, s)
            return augmentation.apply_scaled(image, s, base_size)

        dataset = _with_example_seeds(dataset, seed, augment)
    dataset = dataset.batch(batch_size)
    if mixing is not None:
        dataset = _mixed_in_batch(dataset, mixing, seed)
    dataset = dataset.map(
        lambda images, labels: (preprocessing.normalize(images), labels),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _mixed_in_batch(dataset: tf.data.Dataset, mixing: Mixing, seed: int) -> tf.data.Dataset:
    """Batches whose examples are mixed with their neighbour in the batch (the batch rolled by
    one; shuffled batches give new partners every epoch), mixed ones marked `UNLABELED`. A tuple
    of images (one example at two resolutions) gets the same mixing in each."""
    seeds = tf.data.Dataset.random(
        seed=seed + MIXING_SEED_OFFSET, rerandomize_each_iteration=True
    ).batch(2)

    def mix(batch, s):
        images, labels = batch
        group = images if isinstance(images, tuple) else (images,)
        mixed_group = [mixing.apply(im, tf.roll(im, 1, axis=0), s) for im in group]
        mixed = mixed_group[0][1]
        out = tuple(im for im, _ in mixed_group)
        return (
            out if isinstance(images, tuple) else out[0],
            mixing_lib.label_mixed(labels, mixed, UNLABELED),
        )

    return tf.data.Dataset.zip((dataset, seeds)).map(mix, num_parallel_calls=tf.data.AUTOTUNE)


def paired_batches(
    student: Splits,
    teacher: Splits,
    split: str,
    batch_size: int,
    *,
    shuffle: bool = False,
    augmentation: Augmentation | None = None,
    seed: int = 0,
    mixing: Mixing | None = None,
) -> tf.data.Dataset:
    """`({"image": student_images, "teacher_image": teacher_images}, labels)` batches: each
    example at the student's and at the teacher's resolution (`Splits.at`), with one
    augmentation (and `mixing`, as in `batches`) drawn per example and applied to both, for a
    Distiller whose teacher takes another input size.

    Args:
        student, teacher: the same splits at the student's and the teacher's size.
        split: "train", "validation" or "test".
    """
    check_batch_size(batch_size)
    base_size = tuple(student.preprocessing.image_size)
    pairs = tf.data.Dataset.zip((getattr(student, split), getattr(teacher, split))).map(
        lambda s, t: ((s[0], t[0]), s[1])
    )
    if shuffle:
        pairs = reshuffled(pairs, seed)
    if augmentation is not None:
        pairs = _with_example_seeds(
            pairs,
            seed,
            lambda images, s: (
                augmentation.apply_scaled(images[0], s, base_size),
                augmentation.apply_scaled(images[1], s, base_size),
            ),
        )
    pairs = pairs.batch(batch_size)
    if mixing is not None:
        pairs = _mixed_in_batch(pairs, mixing, seed)
    return pairs.map(
        lambda images, labels: (
            schema.inputs(
                student.preprocessing.normalize(images[0]),
                teacher_image=teacher.preprocessing.normalize(images[1]),
            ),
            labels,
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)
