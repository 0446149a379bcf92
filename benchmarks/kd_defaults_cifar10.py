r"""Which student-loss weight, temperature and method to default to: KD settings against the
student alone, with a strong and a weak teacher, on CIFAR-10 images.

    python -m benchmarks.kd_defaults_cifar10 --data=PATH/TO/cifar10

The weak teacher is the same architecture trained for a fraction of the epochs (barely better
than the student alone), the situation where the keras.io defaults (0.1, T=4) hurt. Every
student starts from the same weights and sees the same batches. Writes
benchmarks/results/kd_defaults_cifar10.json and its section of RESULTS.md.
"""

import time

import numpy as np
from absl import app, flags

import tfkd
from benchmarks import common
from tfkd.distill import training
from tfkd.keras import keras
from tfkd.tasks import classification

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "CIFAR-10 image folder (train/<class>/*.jpg, test/...).")
flags.DEFINE_integer("train_images", 10000, "Training images (a seeded sample of every class).")
flags.DEFINE_integer("test_images", 2000, "Test images.")
flags.DEFINE_string("teacher", "resnet20", "Teacher model.")
flags.DEFINE_string("student", "resnet8", "Student model.")
flags.DEFINE_integer("strong_epochs", 15, "Epochs of the strong teacher.")
flags.DEFINE_integer("weak_epochs", 2, "Epochs of the weak teacher.")
flags.DEFINE_integer("student_epochs", 10, "Epochs of every student.")
flags.DEFINE_list(
    "settings",
    ["kd:0.1:4", "kd:0.5:4", "kd:0.5:1", "kd:0.9:4", "dkd:0.5:4", "dist:0.5:1"],
    "method:student_loss_weight:temperature, optionally followed by :std (logit "
    "standardization) and/or :mixup or :cutmix (consistent teaching, half the "
    "examples mixed).",
)
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("name", "kd_defaults_cifar10", "Results file and RESULTS.md section name.")
flags.DEFINE_bool(
    "render_only", False, "Only rewrite the RESULTS.md section from the results file of --name."
)


LEARNING_RATE = 2e-3
# Points of accuracy under which one seed on 2,000 test images cannot tell two settings apart.
NOISE = 1.0
SMOKE = {
    "data": common.CIFAR_SAMPLE,
    "train_images": 64,
    "test_images": 20,
    "teacher": "cnn_small",
    "student": "cnn_tiny",
    "strong_epochs": 1,
    "weak_epochs": 1,
    "student_epochs": 1,
    "settings": ["kd:0.9:4:std:mixup"],
}


def _optimizer(steps):
    return training.optimizer("adam", LEARNING_RATE, steps)


def parse_setting(setting: str):
    """`method:weight:temperature[:std][:mixup|cutmix]` -> (loss, weight, mixing or None)."""
    method, weight, temperature, *extras = setting.split(":")
    unknown = set(extras) - {"std", *tfkd.data.mixing.KINDS}
    if unknown:
        raise app.UsageError(
            f"--settings={setting}: unknown {sorted(unknown)}; append :std, :mixup or :cutmix."
        )
    loss = tfkd.losses.get(method, temperature=float(temperature), standardize="std" in extras)
    kinds = [e for e in extras if e in tfkd.data.mixing.KINDS]
    return loss, float(weight), tfkd.data.mixing.Mixing(kinds[0]) if kinds else None


def main(argv):
    del argv
    if FLAGS.render_only:
        return render_only()
    common.apply_smoke(SMOKE)
    started = time.time()
    keras.utils.set_random_seed(FLAGS.seed)
    splits = tfkd.data.load(f"folder:{FLAGS.data}", seed=FLAGS.seed)
    prep = splits.preprocessing
    subset = common.shuffled(splits.train).take(FLAGS.train_images).cache()
    test_images = common.shuffled(splits.test).take(FLAGS.test_images).cache()
    test = tfkd.data.batches(test_images, prep, 256)

    def train_batches(mixing=None):
        return tfkd.data.batches(
            subset,
            prep,
            128,
            shuffle=True,
            seed=FLAGS.seed,
            augmentation=tfkd.data.Augmentation(flip=True, pad_crop=4),
            mixing=mixing,
        )

    steps = int(train_batches().cardinality())
    shape, classes = prep.input_shape, splits.num_classes
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    teachers = {}
    for name, epochs in (("strong", FLAGS.strong_epochs), ("weak", FLAGS.weak_epochs)):
        keras.utils.set_random_seed(FLAGS.seed)
        teacher = tfkd.models.build(FLAGS.teacher, shape, classes)
        teacher.compile(_optimizer(steps * epochs), ce)
        teacher.fit(train_batches(), epochs=epochs, verbose=2)
        teachers[name] = teacher

    keras.utils.set_random_seed(FLAGS.seed + 1)
    initial = tfkd.models.build(FLAGS.student, shape, classes).get_weights()

    def fresh():
        model = tfkd.models.build(FLAGS.student, shape, classes)
        model.set_weights(initial)
        return model

    baseline = fresh()
    baseline.compile(_optimizer(steps * FLAGS.student_epochs), ce)
    baseline.fit(train_batches(), epochs=FLAGS.student_epochs, verbose=2)
    results = {
        "baseline": classification.keras_accuracy(baseline, test),
        "teachers": {n: classification.keras_accuracy(t, test) for n, t in teachers.items()},
        "kd": {},
    }
    for name, teacher in teachers.items():
        for setting in FLAGS.settings:
            loss, weight, mixing = parse_setting(setting)
            student = fresh()
            distiller = tfkd.Distiller(student, teacher, loss=loss, student_loss_weight=weight)
            distiller.compile(optimizer=_optimizer(steps * FLAGS.student_epochs))
            distiller.fit(train_batches(mixing), epochs=FLAGS.student_epochs, verbose=2)
            results["kd"].setdefault(name, {})[setting] = classification.keras_accuracy(
                student, test
            )
            print(name, setting, results["kd"][name][setting], flush=True)
    minutes = common.write_results(
        FLAGS.name,
        results,
        started,
        (
            "train_images",
            "test_images",
            "teacher",
            "student",
            "strong_epochs",
            "weak_epochs",
            "student_epochs",
            "seed",
            "settings",
        ),
    )
    common.write_section(FLAGS.name, section(results, minutes))


def current_default() -> str:
    """tfkd's default, in this benchmark's setting notation."""
    weight = tfkd.distill.distiller.DEFAULT_STUDENT_LOSS_WEIGHT
    return f"kd:{weight:g}:{tfkd.losses.DEFAULT_TEMPERATURE:g}"


def section(results: dict, minutes: float) -> str:
    base = results["baseline"]
    rows = "\n".join(
        f"| {setting} | "
        + " | ".join(
            f"{100 * results['kd'][t][setting]:.2f} "
            f"({100 * (results['kd'][t][setting] - base):+.2f})"
            for t in ("strong", "weak")
        )
        + " |"
        for setting in FLAGS.settings
    )
    mean_gain = {
        s: np.mean([results["kd"][t][s] - base for t in ("strong", "weak")]) for s in FLAGS.settings
    }
    best = max(mean_gain, key=lambda setting: mean_gain[setting])
    default = current_default()
    if default in mean_gain and best != default:
        margin = 100 * (mean_gain[best] - mean_gain[default])
        decision = f"`{best}` beats the current default `{default}` by {margin:.2f} points: " + (
            "more than the noise, a candidate for the new default."
            if margin > NOISE
            else f"within the noise ({NOISE:g} point), so the default stays."
        )
    elif best == default:
        decision = f"The current default `{default}` is the best: it stays."
    else:
        decision = f"The current default `{default}` was not measured here."
    return f"""
## Choosing the distillation defaults on CIFAR-10 (`kd_defaults_cifar10.py`, `{FLAGS.name}`)

{common.machine()}; {minutes:.0f} min; one seed ({FLAGS.seed}). {FLAGS.train_images} training
images (flip + pad-crop), {FLAGS.test_images} test images (seeded samples). Teacher
{FLAGS.teacher}: strong = {FLAGS.strong_epochs} epochs
({100 * results["teachers"]["strong"]:.2f}%), weak = {FLAGS.weak_epochs} epochs
({100 * results["teachers"]["weak"]:.2f}%). Student {FLAGS.student}, {FLAGS.student_epochs}
epochs from the same initial weights; alone: {100 * base:.2f}%. Accuracy % (gain over the
student alone); settings are method:student_loss_weight:temperature (`:std` logit
standardization, `:mixup`/`:cutmix` consistent teaching with half the examples mixed; the
teacher runs every step).

| setting | strong teacher | weak teacher |
|---|---|---|
{rows}

Best mean gain over both teachers: `{best}` ({100 * mean_gain[best]:+.2f} points). {decision}
One seed on {FLAGS.test_images} test images (one image = {100 / FLAGS.test_images:.2f} points):
differences under about {NOISE:g} point are noise.
"""


def render_only() -> None:
    """Rewrites the RESULTS.md section from benchmarks/results/<name>.json (no training)."""
    payload = common.read_json(FLAGS.name)
    common.restore_flags(payload)
    common.write_section(FLAGS.name, section(payload, payload["minutes"]))


if __name__ == "__main__":
    app.run(main)
