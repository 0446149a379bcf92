"""The batch schema: every key and marker a training batch may carry, in one place.

A batch is `(inputs, labels)`. `inputs` is the student's images, or a dict of them with what
else the Distiller needs:
- `IMAGE`: the student's normalised images;
- `TEACHER_IMAGE`: the same images at the teacher's own resolution (`paired_batches`);
- `CACHED_LOGITS`: the teacher's logits for those very images, from `tfkd.distill.teacher_cache`, so
  the teacher need not run.
`labels` are integer class ids, `UNLABELED` where an example has none (it learns from the
teacher alone).
"""

import tensorflow as tf

IMAGE = "image"
TEACHER_IMAGE = "teacher_image"
CACHED_LOGITS = "teacher_logits"
# The label of a training example that has none: it learns from the teacher alone.
UNLABELED = -1


def inputs(
    image: tf.Tensor,
    *,
    teacher_image: tf.Tensor | None = None,
    teacher_logits: tf.Tensor | None = None,
) -> dict:
    """The inputs of a batch that carries more than the student's images."""
    built = {IMAGE: image}
    if teacher_image is not None:
        built[TEACHER_IMAGE] = teacher_image
    if teacher_logits is not None:
        built[CACHED_LOGITS] = teacher_logits
    return built


def split_inputs(x) -> tuple:
    """`(student images, teacher images, cached teacher logits or None)` of a batch's inputs:
    the teacher's images are the student's unless the batch carries its own."""
    if not isinstance(x, dict):
        return x, x, None
    cached = x.get(CACHED_LOGITS)
    return (
        x[IMAGE],
        x.get(TEACHER_IMAGE, x[IMAGE]),
        None if cached is None else tf.cast(cached, tf.float32),
    )
