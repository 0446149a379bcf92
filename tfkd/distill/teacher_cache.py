"""The teacher-output cache: run the teacher once, then train students on stored logits.

The keras.io recipe calls the teacher on every batch of every epoch; for a teacher several
times the student's cost that is most of the training time. `build` runs the teacher(s) once
over the training set and stores their logits keyed by example index; `batches` then yields
`({"image": images, "teacher_logits": logits}, labels)`, which the Distiller uses instead of
calling a teacher. The logits travel with their example through the shuffle, so shuffling is
safe.

Random augmentation changes what the teacher would say, so a plain cache would be wrong. tfkd
caches `views` fixed augmented views of every example (each one a stateless function of the
seed, the view number and the example index, as FKD (Shen & Xing, 2021) stores fixed
crops with their soft labels); each epoch every example draws one of its views, and gets the
teacher's logits for exactly that image. More views = more augmentation diversity, and a
teacher pass per view. Without augmentation there is one view: the image itself.

With `mixing` (consistent teaching, `tfkd.data.mixing`), view v of example i is also mixed with
example (i + k_v) mod n, a fixed shift per view: the training stream carries each example's
partners alongside (the dataset zipped with its rotated copies), so no random access to the
images is needed, and the teacher's logits are for exactly the mixed image the student sees.

A cache is reused only if its key matches: the teacher fingerprint (weights or file hash), the
ensemble weights, a hash of every training image and label, the preprocessing, the
augmentation, the mixing, the number of views and the seed. Anything else rebuilds it.
"""

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tfkd import files
from tfkd.data import UNLABELED, Augmentation, Preprocessing, check_batch_size, reshuffled, schema
from tfkd.data import mixing as mixing_lib
from tfkd.data.mixing import Mixing
from tfkd.distill import teacher_cache_store
from tfkd.distill import teachers as teachers_lib

AUTOTUNE = tf.data.AUTOTUNE
# Above this a disk cache is read through a memory map instead of being held in the input graph.
IN_MEMORY_LIMIT_BYTES = 256 << 20


@dataclasses.dataclass
class TeacherCache:
    """Teacher logits of shape `(views, examples, classes)` and what they were computed from."""

    logits: np.ndarray
    key: dict
    augmentation: Augmentation | None
    seed: int
    mixing: Mixing | None = None
    reused: bool = False

    @property
    def base_size(self) -> tuple[int, int] | None:
        """The student's image size when the teacher saw another resolution (augmentation
        drawn for this size and scaled, so both resolutions show one view); None when they
        share one."""
        size = self.key.get("base_size")
        return tuple(size) if size is not None else None

    @property
    def views(self) -> int:
        return int(self.logits.shape[0])

    @property
    def num_examples(self) -> int:
        return int(self.logits.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[2])


def view_image(
    image: tf.Tensor,
    index: tf.Tensor,
    view: tf.Tensor,
    augmentation: Augmentation | None,
    seed: int,
    base_size: Sequence[int] | None = None,
) -> tf.Tensor:
    """View `view` of example `index`: the same image when caching and when training (and, with
    `base_size`, the same view at every resolution)."""
    if augmentation is None:
        return image
    stateless_seed = _view_seed(seed, view, index)
    if base_size is not None:
        return augmentation.apply_scaled(image, stateless_seed, base_size)
    return augmentation.apply(image, stateless_seed)


def _view_seed(seed: int, view: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """The stateless seed of view `view` of example `index`."""
    return tf.stack(
        [tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(view, tf.int64), tf.cast(index, tf.int64)]
    )


def mixed_view(
    image: tf.Tensor,
    partner: tf.Tensor,
    index: tf.Tensor,
    view: tf.Tensor,
    augmentation: Augmentation | None,
    mixing: Mixing,
    seed: int,
    base_size: Sequence[int] | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """View `view` of example `index` mixed with its partner for that view, and whether it was
    mixed: each image augmented with its own stateless seed, the mixing drawn from a third."""
    own = view_image(image, index, view, augmentation, seed, base_size)
    # Negative indices: seeds no example's own view uses.
    other = view_image(partner, -1 - index, view, augmentation, seed, base_size)
    # Indices past any dataset's: seeds no augmentation uses.
    mix_seed = _view_seed(seed, view, tf.cast(index, tf.int64) + (1 << 40))
    mixed_images, mixed = mixing.apply(own[None], other[None], mix_seed)
    return mixed_images[0], mixed[0]


def _partners(dataset: tf.data.Dataset, offsets: Sequence[int]) -> tf.data.Dataset:
    """`dataset`'s images rotated by each of `offsets`, zipped: element i holds the images of
    examples (i + offset) mod n."""
    images = dataset.map(lambda image, label: image)
    return tf.data.Dataset.zip(tuple(images.skip(k).concatenate(images.take(k)) for k in offsets))


def _data_hash(dataset: tf.data.Dataset) -> tuple[str, int, int]:
    """sha256 of every image and label, the example count and the largest label."""
    digest = hashlib.sha256()
    count, max_label = 0, -1
    for images, labels in dataset.batch(1024).as_numpy_iterator():
        digest.update(np.ascontiguousarray(images).tobytes())
        digest.update(np.ascontiguousarray(labels).astype(np.int64).tobytes())
        count += len(labels)
        max_label = max(max_label, int(labels.max()))
    if count == 0:
        raise ValueError("The training set is empty: nothing to cache.")
    return digest.hexdigest(), count, max_label


def _check_views(views: int, augmentation: Augmentation | None, mixing: Mixing | None) -> int:
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        raise ValueError(f"`views` must be an integer >= 1. Received: views={views!r}")
    if augmentation is None and mixing is None and views != 1:
        raise ValueError(
            f"views={views} without augmentation would store the same logits "
            f"{views} times. Use views=1, or pass the augmentation."
        )
    return views


def build(
    teachers,
    dataset: tf.data.Dataset,
    preprocessing: Preprocessing,
    *,
    augmentation: Augmentation | None = None,
    views: int = 1,
    seed: int = 0,
    mixing: Mixing | None = None,
    teacher_weights: Sequence[float] | None = None,
    directory: str | None = None,
    batch_size: int = 256,
    in_memory_limit: int = IN_MEMORY_LIMIT_BYTES,
    writable: bool = True,
    base_size: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TeacherCache:
    """Teacher logits for every example (and view) of `dataset`, reused from `directory` when
    nothing they depend on changed.

    Args:
        teachers: a teacher source or a list of them (ensemble; see `tfkd.distill.teachers.load`).
        dataset: unbatched `(image, label)` examples in a fixed order (e.g. `Splits.train`);
            the order defines the example keys, so it must not be shuffled.
        preprocessing: the normalisation the teacher expects (as in training).
        augmentation: random augmentation used in training, or None.
        views: augmented views stored per example (1 without augmentation or mixing).
        seed: seed of the views.
        mixing: consistent teaching: views mixed with a partner example (`tfkd.data.mixing`).
        teacher_weights: ensemble weights, as given to the Distiller.
        directory: where to keep the cache on disk (e.g. the run directory); None = memory only.
        batch_size: teacher batch size while building.
        in_memory_limit: a disk cache larger than this is read through a memory map.
        writable: False on a non-chief worker: it reuses `directory`'s cache when valid, and
            otherwise builds its own in memory, leaving the writing to the chief.
        base_size: the student's (height, width) when `dataset` holds the teacher's own,
            different resolution of the same images (see `tfkd.data.Splits.at`).
        progress: called as `progress(done, total)` while the teacher runs.
    """
    base_size = tuple(int(s) for s in base_size) if base_size is not None else None
    views = _check_views(views, augmentation, mixing)
    members = teachers_lib.load_all(teachers)
    classes = {teachers_lib.num_classes(t) for t in members}
    if len(classes) != 1:
        raise ValueError(f"Ensemble members emit different class counts {sorted(classes)}.")
    num_classes = classes.pop()
    # Checked before the long passes below; [1, 3] and [0.25, 0.75] give the same cache key.
    teacher_weights = teachers_lib.normalized_weights(teacher_weights, len(members))
    data_hash, count, max_label = _data_hash(dataset)
    # Checked before the teacher pass, which may take long.
    if max_label >= num_classes:
        raise ValueError(
            f"The data has label {max_label} but the teacher emits {num_classes} "
            "logits: teacher and data do not have the same classes."
        )
    key = {
        "teachers": [teachers_lib.fingerprint(t) for t in members],
        "teacher_weights": teacher_weights,
        "data": data_hash,
        "examples": count,
        "classes": num_classes,
        "preprocessing": preprocessing.to_dict(),
        "augmentation": None if augmentation is None else dataclasses.asdict(augmentation),
        "views": views,
        "seed": int(seed),
        "base_size": base_size,
        "mixing": None if mixing is None else dataclasses.asdict(mixing),
    }
    key = json.loads(json.dumps(key))  # tuples become lists, as when read back from disk
    fill = functools.partial(
        _fill,
        members=members,
        dataset=dataset,
        preprocessing=preprocessing,
        augmentation=augmentation,
        seed=seed,
        teacher_weights=teacher_weights,
        batch_size=batch_size,
        base_size=base_size,
        progress=progress,
        mixing=mixing,
    )
    make = functools.partial(
        TeacherCache, key=key, augmentation=augmentation, seed=seed, mixing=mixing
    )
    if directory is None:
        return _in_memory(fill, key, make)
    if not writable:
        stored = teacher_cache_store.read(directory, key, in_memory_limit)
        return make(stored, reused=True) if stored is not None else _in_memory(fill, key, make)
    # Runs sharing `directory` (a search's trials) build the cache once; the others wait for it.
    with files.locked(directory):
        stored = teacher_cache_store.read(directory, key, in_memory_limit)
        if stored is not None:
            logging.info(
                "Reusing the teacher cache in %s (%d examples x %d views).", directory, count, views
            )
            return make(stored, reused=True)
        return make(teacher_cache_store.write(directory, fill, key, in_memory_limit))


def _in_memory(fill: Callable, key: dict, make: Callable) -> TeacherCache:
    logits = np.zeros(teacher_cache_store.shape(key), np.float32)
    fill(logits)
    return make(logits)


def _fill(
    logits,
    members,
    dataset,
    preprocessing,
    augmentation,
    seed,
    teacher_weights,
    batch_size,
    base_size,
    progress,
    mixing,
) -> None:
    """Runs the teacher(s) over every view of every example into `logits[view, index]`."""
    views = logits.shape[0]
    total, done = views * logits.shape[1], 0
    for view in range(views):
        if mixing is None:
            indexed = dataset.enumerate().map(
                lambda index, example, v=view: (
                    view_image(example[0], index, v, augmentation, seed, base_size),
                    example[1],
                    index,
                ),
                num_parallel_calls=AUTOTUNE,
            )
        else:
            offset = mixing_lib.partner_offset(seed, view, logits.shape[1])
            indexed = (
                tf.data.Dataset.zip((dataset, _partners(dataset, [offset])))
                .enumerate()
                .map(
                    lambda index, example, v=view: (
                        mixed_view(
                            example[0][0],
                            example[1][0],
                            index,
                            v,
                            augmentation,
                            mixing,
                            seed,
                            base_size,
                        )[0],
                        example[0][1],
                        index,
                    ),
                    num_parallel_calls=AUTOTUNE,
                )
            )
        indexed = (
            indexed.batch(batch_size)
            .map(
                lambda images, labels, index: (preprocessing.normalize(images), labels, index),
                num_parallel_calls=AUTOTUNE,
            )
            .prefetch(AUTOTUNE)
        )
        for images, _, index in indexed.as_numpy_iterator():
            batch = teachers_lib.ensemble_predict(members, images, teacher_weights)
            _check_logits(batch)
            logits[view, index] = batch
            done += len(index)
            if progress is not None:
                progress(done, total)


def _check_logits(batch: np.ndarray) -> None:
    if not np.all(np.isfinite(batch)):
        raise ValueError("The teacher produced non-finite outputs (NaN or inf).")
    if np.all(batch >= 0) and np.allclose(batch.sum(axis=-1), 1.0, atol=1e-3):
        raise ValueError(
            "The teacher's outputs are probabilities (non-negative, rows sum to 1), "
            "not logits. Remove its final softmax, or wrap it so it returns "
            "log-probabilities (softmax of log p is p)."
        )


def _lookup(cache: TeacherCache):
    """`(views, indices) -> logits` for batches, inside tf.data."""
    if not isinstance(cache.logits, np.memmap):
        table = tf.constant(cache.logits)
        return lambda views, indices: tf.gather_nd(table, tf.stack([views, indices], axis=-1))
    logits = cache.logits

    def read(views, indices):
        return np.asarray(logits[views, indices], np.float32)

    def lookup(views, indices):
        out = tf.numpy_function(read, [views, indices], tf.float32, stateful=False)
        return tf.ensure_shape(out, [None, cache.num_classes])

    return lookup


def batches(
    cache: TeacherCache,
    dataset: tf.data.Dataset,
    preprocessing: Preprocessing,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """`({"image", "teacher_logits"}, labels)` batches for `Distiller.fit`.

    Each epoch, every example is shown as one of its cached views (chosen at random, seeded) with
    the teacher's logits for that view. `dataset` must be the one the cache was built from.
    """
    check_batch_size(batch_size)
    size = int(dataset.cardinality())
    if size >= 0 and size != cache.num_examples:
        raise ValueError(
            f"The dataset has {size} examples but the teacher cache holds "
            f"{cache.num_examples}: it was built from other data. Rebuild it."
        )
    choices = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
    lookup = _lookup(cache)
    augmentation, views, view_seed = cache.augmentation, cache.views, cache.seed
    if cache.base_size is not None and tuple(preprocessing.image_size) != cache.base_size:
        raise ValueError(
            f"The teacher cache was built for a student at {cache.base_size}; "
            f"these images are {tuple(preprocessing.image_size)}."
        )

    def one_view(indexed_example, draw):
        index, (image, label) = indexed_example
        view = tf.cast(draw % views, tf.int64)
        return (
            view_image(image, index, view, augmentation, view_seed, cache.base_size),
            label,
            view,
            index,
        )

    def to_batch(images, labels, view, index):
        return (
            schema.inputs(preprocessing.normalize(images), teacher_logits=lookup(view, index)),
            labels,
        )

    if cache.mixing is None:
        indexed = dataset.enumerate()
        if shuffle:
            indexed = reshuffled(indexed, seed)
        examples = tf.data.Dataset.zip((indexed, choices)).map(
            one_view, num_parallel_calls=AUTOTUNE
        )
    else:
        examples = _mixed_examples(cache, dataset, choices, shuffle, seed)
    return examples.batch(batch_size).map(to_batch, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def _mixed_examples(
    cache: TeacherCache,
    dataset: tf.data.Dataset,
    choices: tf.data.Dataset,
    shuffle: bool,
    seed: int,
) -> tf.data.Dataset:
    """`(image, label, view, index)` of mixed cached views: the view is drawn and its partner
    picked before shuffling, so the shuffle buffer holds two images per example, not one per
    view."""
    views, mixing = cache.views, cache.mixing
    offsets = [
        mixing_lib.partner_offset(cache.seed, view, cache.num_examples) for view in range(views)
    ]

    def pick(indexed_example, draw):
        index, ((image, label), partners) = indexed_example
        view = tf.cast(draw % views, tf.int64)
        return index, image, label, tf.gather(tf.stack(partners), view), view

    def mix(index, image, label, partner, view):
        mixed_image, mixed = mixed_view(
            image, partner, index, view, cache.augmentation, mixing, cache.seed, cache.base_size
        )
        return (mixed_image, mixing_lib.label_mixed(label, mixed, UNLABELED), view, index)

    picked = tf.data.Dataset.zip(
        (tf.data.Dataset.zip((dataset, _partners(dataset, offsets))).enumerate(), choices)
    ).map(pick, num_parallel_calls=AUTOTUNE)
    if shuffle:
        picked = reshuffled(picked, seed)
    return picked.map(mix, num_parallel_calls=AUTOTUNE)
