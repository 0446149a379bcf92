"""What raw pixels become before a model sees them, recorded for export (`Preprocessing`), and
the random training augmentation (`Augmentation`)."""

import dataclasses
from collections.abc import Sequence

import tensorflow as tf

from tfkd.data import images

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
