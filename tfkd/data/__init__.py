"""Data, in the order it flows: datasets by name (`sources`, `folders`, decoded by `images`),
what is done to their splits (`splits`), the preprocessing recorded for export and the
augmentation (`preprocessing`), mixed images (`mixing`), input pipelines (`batching`), and the
keys a batch may carry (`schema`).

The names below are the package's public API; `tfkd.data.X` is the same object as the one in
its module.
"""

from tfkd.data import images, mixing, schema
from tfkd.data.batching import (
    MIXING_SEED_OFFSET,
    batches,
    check_batch_size,
    paired_batches,
    reshuffled,
)
from tfkd.data.folders import (
    DATA_CACHES,
    DEFAULT_MEMORY_BUDGET_BYTES,
    HELD_OUT_FOLDERS,
    IMAGE_EXTENSIONS,
    default_cache_dir,
    with_unlabeled,
)
from tfkd.data.preprocessing import (
    DEFAULT_IMAGE_SIZE,
    MIN_IMAGE_SIDE,
    RESIZE_POLICIES,
    Augmentation,
    Preprocessing,
    check_image_size,
    photo_preprocessing,
)
from tfkd.data.schema import CACHED_LOGITS, IMAGE, TEACHER_IMAGE, UNLABELED
from tfkd.data.sources import DEFAULT_VALIDATION_FRACTION, load
from tfkd.data.splits import (
    Splits,
    hide_labels,
    labeled_train,
    set_aside,
    stratified_split,
    train_labels,
)

__all__ = [
    "images",
    "mixing",
    "CACHED_LOGITS",
    "DATA_CACHES",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_MEMORY_BUDGET_BYTES",
    "DEFAULT_VALIDATION_FRACTION",
    "HELD_OUT_FOLDERS",
    "IMAGE",
    "IMAGE_EXTENSIONS",
    "MIN_IMAGE_SIDE",
    "MIXING_SEED_OFFSET",
    "RESIZE_POLICIES",
    "TEACHER_IMAGE",
    "UNLABELED",
    "Augmentation",
    "Preprocessing",
    "Splits",
    "batches",
    "check_batch_size",
    "check_image_size",
    "default_cache_dir",
    "hide_labels",
    "labeled_train",
    "load",
    "paired_batches",
    "photo_preprocessing",
    "reshuffled",
    "schema",
    "set_aside",
    "stratified_split",
    "train_labels",
    "with_unlabeled",
]
