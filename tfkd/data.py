"""Dataset sources, the preprocessing recorded for export, augmentation and input pipelines.

Sources, by name:
- `digits`: scikit-learn's bundled 8x8 digit images (1,797), split deterministically and
  stratified into train/validation/test. Works offline; the default for quick runs.
- `folder:PATH`: an image folder `PATH/train/<class>/*.jpg|png` with optional `test/` and
  `validation/` (or `val/`) splits next to it; missing splits are carved from `train/` with a
  seeded, class-stratified split. Read with `tfds.folder_dataset.ImageFolder`.
- `tfds:NAME` (or a bare tfds name such as `cifar10`): a TensorFlow Datasets builder, prepared
  in `data_dir`.

Every source yields unbatched `(image, label)` pairs with raw pixel values (uint8) and int64
labels; `Preprocessing.normalize` turns raw pixels into model inputs, in training and on device.
"""

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tfkd import images
from tfkd import mixing as mixing_lib
from tfkd.keras import keras
from tfkd.mixing import Mixing

AUTOTUNE = tf.data.AUTOTUNE
# Offset of the in-batch mixing's seeds from the shuffling and augmentation seed.
MIXING_SEED_OFFSET = 7919
# Decoded images up to this size are kept in memory (data_cache="auto"), larger sets on disk.
DEFAULT_MEMORY_BUDGET_BYTES = 1 << 30
DATA_CACHES = ("auto", "memory", "disk")
# Folders of photos of varying size train at this size unless told otherwise.
DEFAULT_IMAGE_SIZE = (224, 224)
MIN_IMAGE_SIDE = 16
RESIZE_POLICIES = images.RESIZE_POLICIES


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How raw pixels become model inputs: `(raw * scale - mean) / std`, per channel.

    Recorded in the model card so the Android app applies exactly what training applied.
    """

    image_size: tuple[int, int]
    channels: int
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # How a picture of another aspect ratio becomes `image_size` (`RESIZE_POLICIES`).
    resize: str = "stretch"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    def normalize(self, images: tf.Tensor) -> tf.Tensor:
        images = tf.cast(images, tf.float32) * self.scale
        return (images - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> "Preprocessing":
        return cls(
            image_size=tuple(config["image_size"]),
            channels=int(config["channels"]),
            scale=float(config["scale"]),
            mean=tuple(config["mean"]),
            std=tuple(config["std"]),
            resize=config.get("resize", "stretch"),
        )

    def at(self, image_size: Sequence[int]) -> "Preprocessing":
        """The same normalisation for images of another size."""
        height, width = (int(s) for s in image_size)
        return dataclasses.replace(self, image_size=(height, width))


def photo_preprocessing(
    image_size: tuple[int, int], channels: int, resize: str = "stretch"
) -> Preprocessing:
    """Photos' normalisation to about [-1, 1]. The mean is 128/255, not 0.5, so that the
    zero point 128 is exact and a uint8 model takes raw camera bytes without rounding
    (`tfkd.export.raw_byte_quantization`)."""
    return Preprocessing(
        image_size, channels, 1.0 / 255.0, (128.0 / 255.0,) * channels, (0.5,) * channels, resize
    )


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random training augmentation applied to raw images: horizontal flip and pad-and-crop.

    Args:
        flip: random left-right flip (wrong for digits and text; right for natural images).
        pad_crop: pad each side by this many black pixels, then crop back at a random offset.
    """

    flip: bool = True
    pad_crop: int = 4

    def __post_init__(self):
        if self.pad_crop < 0:
            raise ValueError(f"`pad_crop` must be >= 0. Received: pad_crop={self.pad_crop}")

    def apply(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        if self.flip:
            images = tf.image.stateless_random_flip_left_right(images, flip_seed)
        if self.pad_crop:
            p = self.pad_crop
            padded = tf.pad(images, [[p, p], [p, p], [0, 0]])
            images = tf.image.stateless_random_crop(padded, tf.shape(images), crop_seed)
        return images

    def apply_scaled(
        self, image: tf.Tensor, seed: tf.Tensor, base_size: Sequence[int]
    ) -> tf.Tensor:
        """The augmentation drawn for an image of `base_size`, applied to `image` of any size
        with the shift scaled: one seed gives the same flip and the same relative shift at
        every resolution, so a teacher and a student at their own sizes see one view."""
        flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        if self.flip:
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        if self.pad_crop:
            height, width = int(image.shape[0]), int(image.shape[1])
            scale_y, scale_x = height / base_size[0], width / base_size[1]
            shift = (
                tf.random.stateless_uniform([2], crop_seed, 0, 2 * self.pad_crop + 1, tf.int32)
                - self.pad_crop
            )
            dy = tf.cast(tf.round(tf.cast(shift[0], tf.float32) * scale_y), tf.int32)
            dx = tf.cast(tf.round(tf.cast(shift[1], tf.float32) * scale_x), tf.int32)
            pad_y, pad_x = round(self.pad_crop * scale_y), round(self.pad_crop * scale_x)
            padded = tf.pad(image, [[pad_y, pad_y], [pad_x, pad_x], [0, 0]])
            image = tf.image.crop_to_bounding_box(padded, pad_y + dy, pad_x + dx, height, width)
        return image


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


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# The held-out splits of an image folder and the folder names each may have.
HELD_OUT_FOLDERS = {"test": ("test",), "validation": ("validation", "val")}
_SPLIT_FOLDERS = {f for folders in HELD_OUT_FOLDERS.values() for f in folders}


def _folder_split_files(split_dir: bytes, class_names: Sequence[str]) -> tuple[list, np.ndarray]:
    """Image paths (bytes: file names need not be UTF-8) and labels under `split_dir/<class>/`."""
    paths, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(split_dir, os.fsencode(name))
        if not os.path.isdir(class_dir):
            continue
        for file_name in sorted(os.listdir(class_dir)):
            if os.fsdecode(file_name).lower().endswith(IMAGE_EXTENSIONS):
                paths.append(os.path.join(class_dir, file_name))
                labels.append(label)
    return paths, np.asarray(labels, np.int64)


def _class_folders(split_dir: bytes) -> list[str]:
    return sorted(
        os.fsdecode(n) for n in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, n))
    )


def _folder_layout_error(root: str, found: list[str]) -> ValueError:
    return ValueError(
        f"Image folder {root} has no 'train' subfolder (found: {sorted(found)}). Expected "
        f"layout: {root}/train/<class>/*.jpg|png, optionally with test/ and validation/ beside "
        "train/."
    )


def _load_folder(
    root: str,
    validation_fraction: float,
    seed: int,
    image_size: tuple[int, int] | None,
    extra_sizes: Sequence[tuple[int, int]],
    resize: str,
    cache: str,
    cache_dir: str | None,
    memory_budget: int,
    progress: Callable[[int, int], None] | None,
) -> Splits:
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"Image folder {root} does not exist. Pass `folder:PATH` with PATH holding "
            "train/<class>/*.jpg (e.g. folder:~/photos)."
        )
    subfolders = [f for f in os.listdir(root) if os.path.isdir(os.path.join(root, f))]
    if "train" not in subfolders:
        raise _folder_layout_error(root, subfolders)
    root_bytes = os.fsencode(root)
    class_names = tuple(_class_folders(os.path.join(root_bytes, b"train")))
    for split in subfolders:
        unknown = sorted(
            set(_class_folders(os.path.join(root_bytes, os.fsencode(split)))) - set(class_names)
        )
        if unknown and split in _SPLIT_FOLDERS:
            raise ValueError(
                f"{root}/{split} has classes that train/ does not: {unknown}. The model can only "
                f"learn classes it trains on. Fix: add {root}/train/<class>/ images for them, "
                f"or remove them from {split}/."
            )
    files = {
        split: _folder_split_files(os.path.join(root_bytes, os.fsencode(split)), class_names)
        for split in subfolders
        if split == "train" or split in _SPLIT_FOLDERS
    }
    train_paths, train_labels = files["train"]
    if not train_paths:
        raise ValueError(
            f"Image folder {root}/train holds no images ({', '.join(IMAGE_EXTENSIONS)}) in class "
            "subfolders. Fix: put images in train/<class>/."
        )
    empty = [class_names[c] for c in range(len(class_names)) if not np.any(train_labels == c)]
    if empty:
        raise ValueError(
            f"Classes {empty} have no training images in {root}/train. Fix: add images or "
            "remove those class folders from every split."
        )
    held_from_train = [
        split for split, folders in HELD_OUT_FOLDERS.items() if not any(f in files for f in folders)
    ]
    needed = 1 + len(held_from_train)
    counts = np.bincount(train_labels, minlength=len(class_names))
    few = {class_names[c]: int(n) for c, n in enumerate(counts) if n < needed}
    if few:
        name, count = next(iter(few.items()))
        raise ValueError(
            f"Class '{name}' has {count} training image(s) ({few}); each class needs at least "
            f"{needed}: one for training and one for each split carved from train/ "
            f"({held_from_train}). Fix: add images, or give {root} its own "
            f"{'/ and '.join(held_from_train)}/ folder(s)."
        )
    chosen = {}
    for split, folders in HELD_OUT_FOLDERS.items():
        present = next((f for f in folders if f in files), None)
        if present is not None:
            chosen[split] = files[present]
    keep = np.arange(len(train_paths))
    for offset, split in enumerate(held_from_train):
        kept, held = stratified_split(train_labels[keep], validation_fraction, seed + offset)
        chosen[split] = ([train_paths[i] for i in keep[held]], train_labels[keep[held]])
        keep = keep[kept]
        logging.info(
            "%s: no %s/ folder; held out %d training images (%.0f%% per class, seed %d).",
            root,
            split,
            len(held),
            100 * validation_fraction,
            seed + offset,
        )
    chosen["train"] = ([train_paths[i] for i in keep], train_labels[keep])
    for split, (paths, _) in chosen.items():
        if not paths:
            raise ValueError(
                f"The {split} split of {root} is empty. Fix: add images to {root}/{split}/ "
                "or raise `validation_fraction`."
            )

    headers = {split: images.read_headers(paths) for split, (paths, _) in chosen.items()}
    _refuse_oversized(
        root,
        [
            (path, h)
            for split, (paths, _) in chosen.items()
            for path, h in zip(paths, headers[split])
        ],
    )
    if image_size is None:
        image_size = _default_image_size(root, [h for hs in headers.values() for h in hs])
    sizes = [image_size] + [s for s in dict.fromkeys(extra_sizes) if s != image_size]
    channels = 3
    total = sum(len(p) for p, _ in chosen.values())
    pixel_bytes = total * sum(h * w for h, w in sizes) * channels
    directory = _cache_directory(root_bytes, pixel_bytes, cache, cache_dir, memory_budget)
    logging.info(
        "%s: %d images decoded once at %s (%s), %.0f MB of pixels kept in %s.",
        root,
        total,
        ", ".join(f"{h}x{w}" for h, w in sizes),
        resize,
        pixel_bytes / 2**20,
        directory or "memory",
    )
    decoded, bad, offset = {}, [], 0
    for split, (paths, _) in chosen.items():
        result = images.decode_files(
            paths,
            sizes,
            resize,
            channels=channels,
            headers=headers[split],
            directory=directory,
            name=split,
            progress=None
            if progress is None
            else functools.partial(_shifted, progress, offset, total),
        )
        offset += len(paths)
        decoded[split] = result.images
        bad += result.bad
    _refuse_undecodable(root, bad)

    resolutions = {
        size: tuple(
            images.dataset(decoded[split][size], chosen[split][1])
            for split in ("train", "validation", "test")
        )
        for size in sizes
    }
    train, validation, test = resolutions[image_size]
    return Splits(
        name=f"folder:{root}",
        class_names=class_names,
        preprocessing=photo_preprocessing(image_size, channels, resize),
        train=train,
        validation=validation,
        test=test,
        sizes={split: len(paths) for split, (paths, _) in chosen.items()},
        resolutions=resolutions,
    )


def _cache_directory(
    root: bytes, pixel_bytes: int, cache: str, cache_dir: str | None, memory_budget: int
) -> str | None:
    """Where the decoded images of the folder `root` are kept: None for memory (`cache` memory,
    or auto within `memory_budget`), else a directory of the disk cache named by the folder."""
    if cache == "memory" or (cache == "auto" and pixel_bytes <= memory_budget):
        return None
    return os.path.join(
        cache_dir or default_cache_dir(), "images", hashlib.sha256(root).hexdigest()[:16]
    )


def _refuse_oversized(root: str, files: Sequence[tuple]) -> None:
    """`ValueError` naming the `(path, header)` images too large to decode safely."""
    oversized = [(path, h) for path, h in files if h.width * h.height > images.MAX_IMAGE_PIXELS]
    if oversized:
        path, header = oversized[0]
        raise ValueError(
            f"{len(oversized)} image(s) in {root} are too large to decode safely, e.g. "
            f"{os.fsdecode(path)} is {header.width}x{header.height} "
            f"({header.width * header.height / 1e6:.0f} megapixels; the limit is "
            f"{images.MAX_IMAGE_PIXELS / 1e6:.0f}). Fix: downscale them (they are resized to "
            "the model's input anyway)."
        )


def _refuse_undecodable(root: str, bad: Sequence) -> None:
    if bad:
        raise ValueError(
            f"{len(bad)} image(s) in {root} cannot be decoded, e.g. "
            f"{[os.fsdecode(p) for p in bad[:5]]}. Fix: delete or re-encode them (JPEG or "
            "PNG)."
        )


# The label of a training example that has none: it learns from the teacher alone.
UNLABELED = -1


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
                .map(lambda index, example: example, num_parallel_calls=AUTOTUNE)
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
            num_parallel_calls=AUTOTUNE,
        )

    logging.info(
        "Kept the labels of %d of %d training examples (%.0f%% per class, seed %d).",
        len(labeled),
        len(labels),
        100 * fraction,
        seed,
    )
    return _relabel(splits, hidden, dict(splits.sizes, labeled=len(labeled)))


def with_unlabeled(
    splits: Splits,
    root: str,
    *,
    cache: str = "auto",
    cache_dir: str | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET_BYTES,
    progress: Callable[[int, int], None] | None = None,
) -> Splits:
    """`splits` whose training split also holds every image under `root` (any layout, any
    depth), marked `UNLABELED`, at every resolution the splits were loaded at: a transfer set
    the teacher labels with its soft targets. Decoded once, as a folder dataset's images."""
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"Unlabeled image folder {root} does not exist. Pass "
            "folder:PATH with PATH holding images (any layout)."
        )
    channels = splits.preprocessing.channels
    if channels != 3:
        raise ValueError(
            f"Unlabeled images join RGB photo datasets; '{splits.name}' has "
            f"{channels} channel(s). Fix: use --label_fraction to hide labels of "
            "its own images instead."
        )
    paths = sorted(
        os.path.join(os.fsencode(directory), name)
        for directory, _, names in os.walk(root)
        for name in map(os.fsencode, names)
        if os.fsdecode(name).lower().endswith(IMAGE_EXTENSIONS)
    )
    if not paths:
        raise ValueError(
            f"Unlabeled image folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)})."
        )
    headers = images.read_headers(paths)
    _refuse_oversized(root, list(zip(paths, headers)))
    sizes = list(splits.resolutions)
    directory = _cache_directory(
        os.fsencode(root),
        len(paths) * sum(h * w for h, w in sizes) * channels,
        cache,
        cache_dir,
        memory_budget,
    )
    result = images.decode_files(
        paths,
        sizes,
        splits.preprocessing.resize,
        channels=channels,
        headers=headers,
        directory=directory,
        name="unlabeled",
        progress=None if progress is None else functools.partial(_shifted, progress, 0, len(paths)),
    )
    _refuse_undecodable(root, result.bad)
    extra = np.full(len(paths), UNLABELED, np.int64)

    def joined(train, size):
        return train.concatenate(images.dataset(result.images[size], extra))

    labeled = splits.sizes.get("labeled", splits.sizes["train"])
    logging.info(
        "Added %d unlabeled images from %s to the %d training examples.",
        len(paths),
        root,
        splits.sizes["train"],
    )
    return _relabel(
        splits,
        joined,
        dict(splits.sizes, train=splits.sizes["train"] + len(paths), labeled=labeled),
    )


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


def default_cache_dir() -> str:
    """Where decoded images are kept on disk: $TFKD_CACHE, else $XDG_CACHE_HOME/tfkd, else
    ~/.cache/tfkd."""
    if os.environ.get("TFKD_CACHE"):
        return os.environ["TFKD_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tfkd")


def _default_image_size(root: str, headers) -> tuple[int, int]:
    """The images' own size when they all share one small size (an exported dataset);
    otherwise `DEFAULT_IMAGE_SIZE`: never the size of some photo (a 12 MP input)."""
    found = {h.upright_size for h in headers if h.width}
    if len(found) == 1 and max(next(iter(found))) <= 512:
        return next(iter(found))
    logging.warning(
        "%s: images of %d different sizes (largest %s); training at %dx%d. Set "
        "the size with image_size (--image_size=H,W).",
        root,
        len(found),
        max(found, key=lambda s: s[0] * s[1]) if found else None,
        *DEFAULT_IMAGE_SIZE,
    )
    return DEFAULT_IMAGE_SIZE


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
            num_parallel_calls=AUTOTUNE,
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
    validation_fraction: float = 0.1,
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


def _shifted(progress: Callable[[int, int], None], offset: int, total: int, done: int) -> None:
    """Reports `done` images of one part as `offset + done` of `total` over all parts."""
    progress(offset + done, total)


def check_image_size(image_size: Sequence) -> tuple[int, int]:
    """(height, width) as ints, each at least `MIN_IMAGE_SIDE`; `ValueError` otherwise."""
    try:
        size = tuple(int(s) for s in image_size)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 2 or min(size) < MIN_IMAGE_SIDE:
        raise ValueError(
            f"An image size must be two numbers H,W of at least {MIN_IMAGE_SIDE} "
            f"pixels, e.g. 128,128. Received: {image_size}"
        )
    return size[0], size[1]


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
        lambda example, s: (augment(example[0], s), example[1]), num_parallel_calls=AUTOTUNE
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
    and marks the mixed ones `UNLABELED` (`tfkd.mixing`).
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
        num_parallel_calls=AUTOTUNE,
    )
    return dataset.prefetch(AUTOTUNE)


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

    return tf.data.Dataset.zip((dataset, seeds)).map(mix, num_parallel_calls=AUTOTUNE)


TEACHER_IMAGE = "teacher_image"


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
            {
                "image": student.preprocessing.normalize(images[0]),
                TEACHER_IMAGE: teacher.preprocessing.normalize(images[1]),
            },
            labels,
        ),
        num_parallel_calls=AUTOTUNE,
    ).prefetch(AUTOTUNE)
