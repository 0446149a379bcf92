"""Image folders: `folder:PATH` datasets (`PATH/train/<class>/*.jpg|png`, optional test/ and
validation/), decoded once into memory or a disk cache, and folders of unlabeled images."""

import functools
import hashlib
import os
from collections.abc import Callable, Sequence

import numpy as np
from absl import logging

from tfkd.data import images
from tfkd.data.preprocessing import (
    DEFAULT_IMAGE_SIZE,
    photo_preprocessing,
)
from tfkd.data.schema import UNLABELED
from tfkd.data.splits import Splits, _relabel, stratified_split

# Decoded images up to this size are kept in memory (data_cache="auto"), larger sets on disk.
DEFAULT_MEMORY_BUDGET_BYTES = 1 << 30


DATA_CACHES = ("auto", "memory", "disk")


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


def _shifted(progress: Callable[[int, int], None], offset: int, total: int, done: int) -> None:
    """Reports `done` images of one part as `offset + done` of `total` over all parts."""
    progress(offset + done, total)
