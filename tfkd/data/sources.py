"""Datasets by name: `load("digits" | "folder:PATH" | "tfds:NAME")`.

- `digits`: scikit-learn's bundled 8x8 digit images (1,797), split deterministically and
  stratified into train/validation/test. Works offline; the default for quick runs.
- `folder:PATH`: an image folder `PATH/train/<class>/*.jpg|png` with optional `test/` and
  `validation/` (or `val/`) splits next to it; missing splits are carved from `train/` with a
  seeded, class-stratified split (`tfkd.data.folders`).
- `tfds:NAME` (or a bare tfds name such as `cifar10`): a TensorFlow Datasets builder, prepared
  in `data_dir`.

Every source yields unbatched `(image, label)` pairs with raw pixel values (uint8) and int64
labels; `Preprocessing.normalize` turns raw pixels into model inputs, in training and on device.
"""

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tfkd.data import images
from tfkd.data.folders import DATA_CACHES, DEFAULT_MEMORY_BUDGET_BYTES, _load_folder
from tfkd.data.preprocessing import Preprocessing, check_image_size
from tfkd.data.splits import Splits, _check_fraction, stratified_split

# Share of each class held out of the training images for validation, where a source has no
# validation split of its own.
DEFAULT_VALIDATION_FRACTION = 0.1


def _load_digits(validation_fraction: float, test_fraction: float, seed: int) -> Splits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = digits.images.astype(np.uint8)[..., np.newaxis]  # values 0..16
    labels = digits.target.astype(np.int64)
    rest, test = stratified_split(labels, test_fraction, seed)
    train_pos, val_pos = stratified_split(labels[rest], validation_fraction, seed + 1)
    train, val = rest[train_pos], rest[val_pos]

    def split(index):
        return tf.data.Dataset.from_tensor_slices((pixels[index], labels[index]))

    datasets = (split(train), split(val), split(test))
    return Splits(
        name="digits",
        class_names=tuple(str(d) for d in digits.target_names),
        preprocessing=Preprocessing((8, 8), 1, 1.0 / 16.0, (0.5,), (0.5,)),
        train=datasets[0],
        validation=datasets[1],
        test=datasets[2],
        sizes={"train": len(train), "validation": len(val), "test": len(test)},
        resolutions={(8, 8): datasets},
    )


def _load_tfds(
    name: str,
    data_dir: str | None,
    validation_fraction: float,
    image_size: tuple[int, int] | None,
    extra_sizes: Sequence[tuple[int, int]],
    resize: str,
    download: bool,
) -> Splits:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise _unknown_dataset(name) from error
    how_to_get = (
        f"On a machine with internet run `tfds build {name} --data_dir=DIR`, copy DIR here and "
        "pass DIR as the data directory; or export the images as an image folder and use "
        "folder:PATH."
    )
    if not builder.is_prepared():
        if not download:
            raise FileNotFoundError(
                f"tfds dataset '{name}' is not prepared in {builder.data_dir}. {how_to_get}"
            )
        try:
            builder.download_and_prepare()
        except Exception as error:  # tfds raises many kinds; all mean "could not get the data"
            raise RuntimeError(
                f"Could not download tfds dataset '{name}' into {builder.data_dir} "
                f"({type(error).__name__}: {error}). Offline? {how_to_get}"
            ) from error

    features = builder.info.features
    if "label" not in features or "image" not in features:
        raise ValueError(
            f"tfds dataset '{name}' has features {list(features)}; tfds needs 'image' and "
            "'label' for image classification."
        )
    image_feature = features["image"]
    channels = image_feature.shape[-1] or 3
    if image_size is None:
        if None in image_feature.shape[:2]:
            raise ValueError(
                f"tfds dataset '{name}' has images of varying size {image_feature.shape}; "
                "pass `image_size=(height, width)`."
            )
        image_size = tuple(image_feature.shape[:2])
    splits = builder.info.splits
    validation_split = next((s for s in ("validation", "val") if s in splits), None)
    train_split = "train"
    if validation_split is None:
        cut = int(round(100 * (1 - validation_fraction)))
        train_split, validation_split = f"train[:{cut}%]", f"train[{cut}%:]"
    test_split = "test" if "test" in splits else validation_split

    def load(split, size):
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        return ds.map(
            lambda image, label: (images.resize(image, size, resize), tf.cast(label, tf.int64)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    resolutions = {
        size: tuple(load(split, size) for split in (train_split, validation_split, test_split))
        for size in dict.fromkeys([image_size, *extra_sizes])
    }
    train, validation, test = resolutions[image_size]
    return Splits(
        name=f"tfds:{name}",
        class_names=tuple(features["label"].names),
        preprocessing=Preprocessing(
            image_size, channels, 1.0 / 255.0, (0.5,) * channels, (0.5,) * channels, resize
        ),
        train=train,
        validation=validation,
        test=test,
        resolutions=resolutions,
        sizes={
            "train": builder.info.splits[train_split].num_examples,
            "validation": builder.info.splits[validation_split].num_examples,
            "test": builder.info.splits[test_split].num_examples,
        },
    )


def _unknown_dataset(name: str) -> ValueError:
    return ValueError(
        f"Unknown dataset '{name}'. Available: 'digits', 'folder:PATH' (an image folder with "
        "train/<class>/ images), or 'tfds:NAME' for a TensorFlow Datasets name such as "
        "'tfds:cifar10' (see tfds.list_builders())."
    )


def load(
    name: str,
    *,
    data_dir: str | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_fraction: float = 0.2,
    seed: int = 0,
    image_size: Sequence[int] | None = None,
    extra_sizes: Sequence[Sequence[int]] = (),
    resize: str = "stretch",
    cache: str = "auto",
    cache_dir: str | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET_BYTES,
    download: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Splits:
    """Loads dataset `name` as train/validation/test splits of raw `(image, label)` pairs.

    Args:
        name: `digits`, `folder:PATH`, `tfds:NAME` or a bare tfds name.
        data_dir: where tfds datasets live (tfds only).
        validation_fraction: share of each class held out of train for validation when the
            source has no validation split.
        test_fraction: share held out for test (digits only; folders and tfds bring a test
            split or reuse `validation_fraction`).
        seed: seed of the held-out splits.
        image_size: (height, width) to resize to; default the source's own size (for a folder
            of photos of varying size, `DEFAULT_IMAGE_SIZE`).
        extra_sizes: other (height, width) sizes to load the same images at, e.g. a teacher's
            (`Splits.at`); a folder decodes each file once for all of them.
        resize: how an image of another aspect ratio is resized (`RESIZE_POLICIES`).
        cache: where a folder's decoded images are kept: memory, disk (`cache_dir`, reused by
            later loads of the same files), or auto (memory up to `memory_budget` bytes).
        cache_dir: the disk cache's root; default `default_cache_dir()`.
        download: let tfds download a missing dataset.
        progress: called as `progress(decoded, total)` while a folder's images are decoded.
    """
    _check_fraction("validation_fraction", validation_fraction)
    _check_fraction("test_fraction", test_fraction)
    images.check_policy(resize)
    if cache not in DATA_CACHES:
        raise ValueError(f"Unknown data cache '{cache}'. Available: {list(DATA_CACHES)}")
    if image_size is not None:
        image_size = check_image_size(image_size)
    other_sizes = [check_image_size(s) for s in extra_sizes]
    if name == "digits":
        if {image_size, *other_sizes} - {None, (8, 8)}:
            raise ValueError(
                "digits images are 8x8; other image sizes are not supported. "
                "Fix: leave the image size unset for digits."
            )
        splits = _load_digits(validation_fraction, test_fraction, seed)
    elif name.startswith("folder:"):
        splits = _load_folder(
            name[len("folder:") :],
            validation_fraction,
            seed,
            image_size,
            other_sizes,
            resize,
            cache,
            cache_dir,
            memory_budget,
            progress,
        )
    elif name.startswith("tfds:") or (name and ":" not in name and "/" not in name):
        splits = _load_tfds(
            name.removeprefix("tfds:"),
            data_dir,
            validation_fraction,
            image_size,
            other_sizes,
            resize,
            download,
        )
    else:
        raise _unknown_dataset(name)
    logging.info("Loaded %s", splits.describe())
    return splits
