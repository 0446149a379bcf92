"""Which pixel values a teacher expects, found by measurement, and the adapter that feeds them.

tfkd hands every model images normalised by the run's `Preprocessing`. A teacher trained
elsewhere has its own convention: raw 0-255 pixels with an in-model `Rescaling` (Keras 3
tutorials, keras.applications EfficientNet), [0, 1], [-1, 1] (MobileNet), caffe's BGR mean
subtraction (ResNet50), or tfkd's own. Fed the wrong one, a good teacher measures at chance.

`with_input(teacher, convention, preprocessing)` puts one frozen 1x1 convolution in front of the
teacher that turns tfkd's normalised images into the convention's values: every convention is
per-channel affine in the raw pixels (caffe also swaps RGB to BGR, a permutation), so one
built-in layer is exact, saves with the teacher, and converts to TFLite.

`choose(teacher, preprocessing, batches)` measures every candidate on labelled (validation)
batches and keeps the most accurate. tfkd's own convention ("student") is kept unless another
is better beyond noise (McNemar's exact test, `tfkd.measure.stats`), so a teacher trained by tfkd
never changes convention on a coin flip.
"""

import dataclasses

import numpy as np

from tfkd.keras import keras
from tfkd.measure import stats
from tfkd.tasks.classification import correct_predictions

STUDENT = "student"
# Raw pixels r in [0, 255] -> what the convention feeds the model, as (scale, offset) of r.
_AFFINE = {"raw": (1.0, 0.0), "unit": (1.0 / 255.0, 0.0), "symmetric": (1.0 / 127.5, -1.0)}
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
CONVENTIONS = (STUDENT, "raw", "unit", "symmetric", "caffe")
AUTO = "auto"
ADAPTER_PREFIX = "teacher_input_"


def check(convention: str) -> str:
    if convention not in CONVENTIONS + (AUTO,):
        raise ValueError(
            f"Unknown teacher input convention '{convention}'. Available: {[AUTO, *CONVENTIONS]}"
        )
    return convention


def candidates(channels: int) -> tuple[str, ...]:
    """The conventions worth trying for images with `channels` channels (caffe is RGB only)."""
    return tuple(c for c in CONVENTIONS if c != "caffe" or channels == 3)


def _kernel_and_bias(convention: str, preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """The 1x1 convolution mapping normalised x to the convention's values y = K x + b."""
    channels = preprocessing.channels
    std = np.broadcast_to(np.asarray(preprocessing.std, np.float64), (channels,))
    mean = np.broadcast_to(np.asarray(preprocessing.mean, np.float64), (channels,))
    # x = (r * scale - mean) / std  =>  r = (x * std + mean) / scale
    raw_per_x, raw_offset = std / preprocessing.scale, mean / preprocessing.scale
    if convention == "caffe":
        order = [2, 1, 0]  # output channel c takes input channel order[c] (RGB -> BGR)
        scale, offset = np.ones(channels), -np.asarray(_CAFFE_MEAN_BGR)
    else:
        order = list(range(channels))
        s, o = _AFFINE[convention]
        scale, offset = np.full(channels, s), np.full(channels, o)
    kernel = np.zeros((1, 1, channels, channels))
    bias = np.zeros(channels)
    for out, source in enumerate(order):
        kernel[0, 0, source, out] = scale[out] * raw_per_x[source]
        bias[out] = scale[out] * raw_offset[source] + offset[out]
    return kernel.astype(np.float32), bias.astype(np.float32)


def with_input(teacher: keras.Model, convention: str, preprocessing) -> keras.Model:
    """`teacher` behind a frozen adapter from tfkd's normalised images to `convention`."""
    if check(convention) == AUTO:
        raise ValueError("with_input needs a convention; `choose` finds one by measurement.")
    if convention == STUDENT:
        return teacher
    kernel, bias = _kernel_and_bias(convention, preprocessing)
    inputs = keras.Input(tuple(preprocessing.input_shape), name="image")
    adapter = keras.layers.Conv2D(
        preprocessing.channels, 1, name=ADAPTER_PREFIX + convention, trainable=False
    )
    outputs = teacher(adapter(inputs), training=False)
    adapter.set_weights([kernel, bias])
    model = keras.Model(inputs, outputs, name=teacher.name)
    model.trainable = False
    return model


def convention_of(teacher: keras.Model) -> str:
    """The convention `with_input` gave `teacher` ("student" when it has no adapter)."""
    for layer in teacher.layers:
        if layer.name.startswith(ADAPTER_PREFIX):
            return layer.name[len(ADAPTER_PREFIX) :]
    return STUDENT


@dataclasses.dataclass(frozen=True)
class Choice:
    """The convention kept and what each candidate measured."""

    convention: str
    accuracy: dict[str, float]
    p_value_against_student: float
    images: int

    def message(self) -> str:
        scores = ", ".join(f"{name} {100 * a:.2f}%" for name, a in self.accuracy.items())
        if self.convention == STUDENT:
            return (
                f"Teacher input: tfkd's normalisation (other conventions not better beyond "
                f"noise on {self.images} validation images: {scores})."
            )
        return (
            f"Teacher input: '{self.convention}' pixels, measured on {self.images} "
            f"validation images ({scores}; McNemar p={self.p_value_against_student:.2g} "
            "against tfkd's normalisation). Force one with --teacher_input."
        )

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "message": self.message()}


def choose(teacher: keras.Model, preprocessing, batches, alpha: float = 0.05) -> Choice:
    """The convention under which `teacher` is most accurate on labelled `batches`; tfkd's own
    unless another is better beyond noise (McNemar's exact test at `alpha`)."""
    correct = {
        c: correct_predictions(with_input(teacher, c, preprocessing), batches)
        for c in candidates(preprocessing.channels)
    }
    accuracy = {c: float(np.mean(hits)) for c, hits in correct.items()}
    best = max(accuracy, key=lambda c: (accuracy[c], c == STUDENT))
    p_value = stats.mcnemar_exact(correct[best], correct[STUDENT]) if best != STUDENT else 1.0
    chosen = best if best != STUDENT and p_value < alpha else STUDENT
    return Choice(chosen, accuracy, float(p_value), int(correct[STUDENT].size))


__all__ = [
    "AUTO",
    "CONVENTIONS",
    "Choice",
    "candidates",
    "check",
    "choose",
    "convention_of",
    "with_input",
]
