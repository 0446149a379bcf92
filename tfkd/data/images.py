"""Photos as a model sees them: read once, upright, resized by a policy, kept as uint8.

`decode_files` reads every file of a split once (in parallel, through tf.data), turns it
upright by its EXIF orientation (phones store many photos rotated and say so in a tag that
TensorFlow's decoders ignore), converts grayscale, palette, CMYK and alpha images to RGB,
resizes it to every requested size with the chosen aspect policy and stores the uint8 result,
in memory or in a `.npy` file on disk. Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale in the
DCT domain when that still leaves more pixels than the target: a 12 MP photo then costs a
fraction of a full decode. Training then reads the small stored images, never the files.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfkd import files

AUTOTUNE = tf.data.AUTOTUNE
RESIZE_POLICIES = ("stretch", "crop", "pad")
# The largest image decoded: a 108 MP phone photo passes; a 20000 x 20000 scan does not.
MAX_IMAGE_PIXELS = 120_000_000
_EXIF_ORIENTATION = 0x0112
_JPEG_RATIOS = (1, 2, 4, 8)
_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Header:
    """What the file's header says, read without decoding the pixels."""

    width: int = 0
    height: int = 0
    orientation: int = 1  # EXIF: 1 upright, 3 rotated 180, 6/8 rotated 90, 2/4/5/7 mirrored
    jpeg: bool = False

    @property
    def upright_size(self) -> tuple[int, int]:
        """(height, width) once turned upright: orientations 5-8 swap the axes."""
        if self.orientation in (5, 6, 7, 8):
            return self.width, self.height
        return self.height, self.width


def read_headers(paths: Sequence) -> list[Header]:
    """Size, EXIF orientation and format of every file (a file Pillow cannot open gets an
    empty header; decoding names it)."""
    from PIL import Image  # noqa: PLC0415

    headers = []
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # read sizes, never decode
    try:
        for path in paths:
            try:
                with Image.open(path) as image:
                    orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
                    headers.append(
                        Header(
                            image.size[0],
                            image.size[1],
                            orientation if 1 <= orientation <= 8 else 1,
                            image.format == "JPEG",
                        )
                    )
            except Exception:  # noqa: BLE001 (unreadable files are named by the decoding pass)
                headers.append(Header())
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return headers


def upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """`image` as the EXIF `orientation` (1-8) says it should be displayed."""
    branches = [
        lambda: image,  # 1
        lambda: tf.image.flip_left_right(image),  # 2
        lambda: tf.image.rot90(image, 2),  # 3
        lambda: tf.image.flip_up_down(image),  # 4
        lambda: tf.image.transpose(image),  # 5
        lambda: tf.image.rot90(image, 3),  # 6: turn 90 degrees clockwise
        lambda: tf.image.rot90(tf.image.transpose(image), 2),  # 7
        lambda: tf.image.rot90(image, 1),  # 8: turn 90 counter-clockwise
    ]
    index = tf.clip_by_value(tf.cast(orientation, tf.int32) - 1, 0, 7)
    return tf.switch_case(index, branches)


def resize(image: tf.Tensor, size: Sequence[int], policy: str = "stretch") -> tf.Tensor:
    """`image` (H, W, C) at `size` as uint8: bilinear with half-pixel centres and no
    antialiasing, which is what the Android demo and MediaPipe apply to a camera frame, so a
    model trains on what it will see (large JPEGs are first decoded at a reduced scale, which
    averages, so the remaining shrink is small).

    stretch: both axes scaled independently (the aspect ratio changes);
    crop: scaled to cover `size`, then the centre cut out (the edges are lost);
    pad: scaled to fit inside `size`, then padded with black (nothing lost or distorted).
    """
    check_policy(policy)
    height, width = int(size[0]), int(size[1])
    image = tf.cast(image, tf.float32)
    if policy == "crop":
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        crop_h = tf.minimum(shape[0], tf.round(shape[1] * height / width))
        crop_w = tf.minimum(shape[1], tf.round(shape[0] * width / height))
        top = tf.cast((shape[0] - crop_h) // 2, tf.int32)
        left = tf.cast((shape[1] - crop_w) // 2, tf.int32)
        image = tf.image.crop_to_bounding_box(
            image, top, left, tf.cast(crop_h, tf.int32), tf.cast(crop_w, tf.int32)
        )
    if policy == "pad":
        out = tf.image.resize_with_pad(image, height, width)
    else:
        out = tf.image.resize(image, (height, width))
    return tf.saturate_cast(tf.round(out), tf.uint8)


def check_policy(policy: str) -> str:
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"Unknown resize policy '{policy}'. Available: {list(RESIZE_POLICIES)}")
    return policy


def _jpeg_ratio_index(header: Header, sizes: Sequence[Sequence[int]]) -> int:
    """The largest DCT downscale that still leaves at least every target's pixels per axis."""
    height, width = header.upright_size
    need_h, need_w = max(s[0] for s in sizes), max(s[1] for s in sizes)
    index = 0
    for i, ratio in enumerate(_JPEG_RATIOS):
        if header.jpeg and height // ratio >= need_h and width // ratio >= need_w:
            index = i
    return index


def _decode(contents: tf.Tensor, ratio_index: tf.Tensor, channels: int) -> tf.Tensor:
    """RGB (or `channels`) pixels; JPEGs at 1/`_JPEG_RATIOS[ratio_index]` scale."""

    def general():
        return tf.io.decode_image(contents, channels=channels, expand_animations=False)

    def jpeg(ratio):
        return lambda: tf.io.decode_jpeg(contents, channels=channels, ratio=ratio)

    return tf.switch_case(ratio_index, [general] + [jpeg(r) for r in _JPEG_RATIOS[1:]])


@dataclasses.dataclass(frozen=True)
class Decoded:
    """A split decoded at each size: `images[size]` is `(count, H, W, C)` uint8 (an array or
    a read-only memory map); `bad` lists the paths that could not be decoded."""

    images: dict
    bad: list


def _cache_key(paths: Sequence, sizes, policy: str, channels: int) -> dict:
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        digest.update(os.fsencode(path) + b"\0" + f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return {
        "version": _CACHE_VERSION,
        "files": digest.hexdigest(),
        "count": len(paths),
        "sizes": [list(s) for s in sizes],
        "policy": policy,
        "channels": channels,
    }


def _cache_files(directory: str, name: str, sizes) -> dict:
    return {tuple(s): os.path.join(directory, f"{name}_{s[0]}x{s[1]}.npy") for s in sizes}


def _read_cache(directory: str, name: str, key: dict) -> dict | None:
    key_path = os.path.join(directory, f"{name}.json")
    if not os.path.exists(key_path):
        return None
    with open(key_path, encoding="utf-8") as f:
        if json.load(f) != key:
            return None
    paths = _cache_files(directory, name, key["sizes"])
    if not all(os.path.exists(p) for p in paths.values()):
        return None
    return _map_cache(directory, name, key["sizes"])


def _map_cache(directory: str, name: str, sizes) -> dict:
    """The cached arrays by size, memory-mapped read-only."""
    return {
        size: np.load(path, mmap_mode="r")
        for size, path in _cache_files(directory, name, sizes).items()
    }


def decode_files(
    paths: Sequence,
    sizes: Sequence[Sequence[int]],
    policy: str = "stretch",
    *,
    channels: int = 3,
    headers: Sequence[Header] | None = None,
    directory: str | None = None,
    name: str = "images",
    progress=None,
) -> Decoded:
    """Decodes every file once into uint8 arrays at each of `sizes`.

    Args:
        paths: image files (str or bytes).
        sizes: (height, width) pairs, e.g. the student's and the teacher's.
        policy: `RESIZE_POLICIES`.
        headers: `read_headers(paths)` when already read.
        directory: keep the arrays there as `.npy` files (reused while the files, sizes and
            policy are unchanged) and read them through memory maps; None keeps them in memory.
        name: the arrays' file name prefix in `directory`.
        progress: called with the number of images decoded so far in this call.
    """
    check_policy(policy)
    sizes = [tuple(int(v) for v in s) for s in sizes]
    # Only a cache on disk has a key to match.
    key = _cache_key(paths, sizes, policy, channels) if directory is not None else {}
    if directory is not None:
        stored = _read_cache(directory, name, key)
        if stored is not None:
            return Decoded(stored, [])
    headers = list(headers) if headers is not None else read_headers(paths)
    count = len(paths)

    def load(index, path, orientation, ratio_index):
        image = upright(_decode(tf.io.read_file(path), ratio_index, channels), orientation)
        return (index, *[resize(image, s, policy) for s in sizes])

    dataset = (
        tf.data.Dataset.from_tensor_slices(
            (
                np.arange(count, dtype=np.int64),
                [os.fsencode(p) for p in paths],
                np.array([h.orientation for h in headers], np.int32),
                np.array([_jpeg_ratio_index(h, sizes) for h in headers], np.int32),
            )
        )
        .map(load, num_parallel_calls=AUTOTUNE)
        .ignore_errors()
        .prefetch(AUTOTUNE)
    )

    def fill(arrays: dict) -> list:
        """Decodes into `arrays`; returns the paths that could not be decoded."""
        seen = np.zeros(count, bool)
        for done, (index, *decoded) in enumerate(dataset.as_numpy_iterator(), 1):
            seen[index] = True
            for size, image in zip(sizes, decoded):
                arrays[size][index] = image
            if progress is not None:
                progress(done)
        return [paths[int(i)] for i in np.flatnonzero(~seen)]

    if directory is None:
        arrays = {s: np.zeros((count, *s, channels), np.uint8) for s in sizes}
        return Decoded(arrays, fill(arrays))
    try:
        with contextlib.ExitStack() as stack:
            # Written straight to disk (a large set need not fit in memory), each array under
            # its final name only if every file decoded.
            maps = {
                s: np.lib.format.open_memmap(
                    stack.enter_context(files.atomic_path(target)),
                    mode="w+",
                    dtype=np.uint8,
                    shape=(count, *s, channels),
                )
                for s, target in _cache_files(directory, name, sizes).items()
            }
            bad = fill(maps)
            for array in maps.values():
                array.flush()
            maps.clear()
            if bad:
                raise _Undecodable(bad)
    except _Undecodable as error:
        return Decoded({}, error.paths)
    # The key is written last: arrays without a matching key are never read.
    files.write_text(os.path.join(directory, f"{name}.json"), json.dumps(key, sort_keys=True))
    return Decoded(_map_cache(directory, name, sizes), [])


class _Undecodable(Exception):
    """Ends a disk-cache write without keeping it: some files could not be decoded."""

    def __init__(self, paths: list):
        super().__init__(f"{len(paths)} file(s) could not be decoded")
        self.paths = paths


def dataset(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
    """Unbatched `(image, label)` pairs read from a decoded array (or memory map) by index, so
    the pixels are never copied into the input graph."""
    shape = images.shape[1:]

    def read(index):
        return np.asarray(images[index])

    def example(index, label):
        image = tf.numpy_function(read, [index], tf.uint8, stateful=False)
        return tf.ensure_shape(image, shape), label

    return tf.data.Dataset.from_tensor_slices(
        (np.arange(len(labels), dtype=np.int64), np.asarray(labels, np.int64))
    ).map(example, num_parallel_calls=AUTOTUNE)
