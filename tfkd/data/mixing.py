"""Mixed views for consistent teaching: the teacher and the student see the same mixture of two
training images (Beyer et al., CVPR 2022, "Knowledge distillation: a good teacher is patient
and consistent").

Mixing is an augmentation for distillation only. A mixed image has no true label, so the
student learns it from the teacher alone (the paper's "function matching"): a mixed example is
marked `tfkd.data.UNLABELED`, and the Distiller leaves it out of the hard-label loss. A share
`1 - fraction` of the examples stays unmixed and keeps its label.

Everything is a stateless function of a seed, so a view can be recomputed exactly: the teacher
cache stores the teacher's logits for view v of example i (its partner, ratio and box drawn
from the seed, v and i), and training shows the student that very image. The cutmix box is
drawn in relative coordinates, so a teacher and a student at their own resolutions see one
view.
"""

import dataclasses

import numpy as np
import tensorflow as tf

KINDS = ("mixup", "cutmix")
# Half the examples mixed: the other half keeps the hard labels the default recipe leans on.
DEFAULT_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class Mixing:
    """How distillation views mix two images.

    Args:
        kind: "mixup" (a pixel-wise blend, Zhang et al. 2018) or "cutmix" (a box of the partner
            pasted in, Yun et al. 2019).
        fraction: share of the examples that are mixed; the others keep their label.
        alpha: the mixing ratio is drawn from Beta(alpha, alpha); for cutmix it is the share of
            the image left to the example itself.
    """

    kind: str = "mixup"
    fraction: float = DEFAULT_FRACTION
    alpha: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Unknown mixing {self.kind!r}: use one of {', '.join(KINDS)}.")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"`fraction` must be in (0, 1]. Received: fraction={self.fraction}")
        if not self.alpha > 0.0:
            raise ValueError(f"`alpha` must be > 0. Received: alpha={self.alpha}")

    def draw(self, batch: int, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """For `batch` examples: which are mixed (bool), their ratio λ (the example's own
        share) and, for cutmix, the box centre (relative y, x)."""
        share_seed, gamma_seed, other_seed, centre_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 4)
        )
        mixed = tf.random.stateless_uniform([batch], share_seed) < self.fraction
        # λ ~ Beta(alpha, alpha) as a ratio of two Gamma(alpha) draws.
        first = tf.random.stateless_gamma([batch], gamma_seed, self.alpha)
        second = tf.random.stateless_gamma([batch], other_seed, self.alpha)
        ratio = first / tf.maximum(first + second, 1e-12)
        centre = tf.random.stateless_uniform([batch, 2], centre_seed)
        return mixed, ratio, centre

    def apply(
        self, images: tf.Tensor, partners: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """`images` mixed with `partners` (both `(batch, H, W, C)`, any size and dtype), and
        which examples were mixed."""
        mixed, ratio, centre = self.draw(tf.shape(images)[0], seed)
        own = tf.cast(images, tf.float32)
        other = tf.cast(partners, tf.float32)
        if self.kind == "mixup":
            weight = ratio[:, None, None, None]
            blend = weight * own + (1.0 - weight) * other
        else:
            inside = _box_mask(tf.shape(images)[1], tf.shape(images)[2], ratio, centre)
            blend = tf.where(inside[..., None], other, own)
        out = tf.where(mixed[:, None, None, None], blend, own)
        if images.dtype.is_integer:
            out = tf.round(out)
        return tf.cast(out, images.dtype), mixed


def _box_mask(
    height: tf.Tensor, width: tf.Tensor, ratio: tf.Tensor, centre: tf.Tensor
) -> tf.Tensor:
    """`(batch, H, W)` True inside each example's cutmix box: sides sqrt(1 - λ) of the image's,
    centred at `centre` (relative), clipped to the image. Pixels are tested by their centres in
    relative coordinates, so the box covers the same part of the image at any resolution."""
    side = tf.sqrt(1.0 - ratio)[:, None]
    low = tf.clip_by_value(centre - side / 2, 0.0, 1.0)
    high = tf.clip_by_value(centre + side / 2, 0.0, 1.0)
    rows = (tf.range(height, dtype=tf.float32) + 0.5) / tf.cast(height, tf.float32)
    cols = (tf.range(width, dtype=tf.float32) + 0.5) / tf.cast(width, tf.float32)
    in_rows = (rows[None] >= low[:, :1]) & (rows[None] < high[:, :1])
    in_cols = (cols[None] >= low[:, 1:]) & (cols[None] < high[:, 1:])
    return in_rows[:, :, None] & in_cols[:, None, :]


def partner_offset(seed: int, view: int, size: int) -> int:
    """The partner of example i in cached view `view` is example (i + offset) mod `size`: a
    fixed shift per view, so the training stream can carry each partner alongside (a dataset
    zipped with its rotated copies) without random access to the images."""
    if size < 2:
        raise ValueError("Mixing needs at least 2 training examples.")
    return int(np.random.default_rng([int(seed), int(view)]).integers(1, size))


def label_mixed(labels: tf.Tensor, mixed: tf.Tensor, unlabeled: int) -> tf.Tensor:
    """`labels` with the mixed examples marked `unlabeled` (taught by the teacher alone)."""
    return tf.where(mixed, tf.cast(unlabeled, labels.dtype), labels)
