r"""One table of distillation settings on one CIFAR-10 configuration: the student alone, the
keras.io recipe, tfkd's KD defaults, DKD, DIST, KD with logit standardization, consistent
teaching (mixup, cutmix) and a transfer set of unlabeled images, with the same training budget
for every row, over several seeds.

    python -m benchmarks.comparison_cifar10 --data=PATH/TO/cifar10
    # CIFAR-10 with 10% of the labels: teacher and student alone on the labeled 5,000, the
    # distilled student on all 50,000 images.
    python -m benchmarks.comparison_cifar10 --data=PATH/TO/cifar10 --name=few_labels_cifar10 \
        --train_images=50000 --label_fraction=0.1 --unlabeled_images=0 \
        --rows=alone,kd,transfer --teacher_epochs=40 --steps=2000

The teacher learns from the labeled images only (seed 0). Every row trains the student for the
same number of optimizer steps (the budget), from the same initial weights per seed; the rows
that learn from the teacher read its logits from one teacher cache (`--views` augmented views
per image), so they differ by their loss and their data only. Writes
benchmarks/results/<name>.json and its section of RESULTS.md.
"""

import dataclasses
import math
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

import tfkd
from benchmarks import common
from tfkd.distill import training
from tfkd.keras import keras
from tfkd.measure import batch_norm
from tfkd.tasks import classification

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "CIFAR-10 image folder (train/<class>/*.jpg, test/...).")
flags.DEFINE_integer("train_images", 10000, "Training images (a seeded sample of every class).")
flags.DEFINE_float(
    "label_fraction",
    1.0,
    "Share of --train_images that keeps its label (stratified); the others are unlabeled.",
)
flags.DEFINE_integer(
    "unlabeled_images",
    20000,
    "Further training images, labels hidden, that only the transfer row sees.",
)
flags.DEFINE_integer("test_images", 10000, "Test images.")
flags.DEFINE_integer(
    "validation_images",
    1000,
    "Held-out training-folder images on which the calibrated row compares its probes.",
)
flags.DEFINE_enum(
    "distill_on",
    "labeled",
    ["labeled", "all"],
    "What the distilled rows learn "
    "from: the labeled images, or every training image (labels hidden on the "
    "others, as the pipeline's distilled student with --label_fraction).",
)
flags.DEFINE_string("teacher", "resnet20", "Teacher model.")
flags.DEFINE_string("student", "resnet8", "Student model.")
flags.DEFINE_integer("teacher_epochs", 15, "Epochs of the teacher over the labeled images.")
flags.DEFINE_integer(
    "student_epochs", 10, "Epochs over the labeled images that set the budget when --steps is 0."
)
flags.DEFINE_integer(
    "steps", 0, "Optimizer steps of every row (0: --student_epochs over the labeled images)."
)
flags.DEFINE_integer("views", 8, "Augmented views per image in the teacher cache.")
flags.DEFINE_list("seeds", ["0", "1"], "Student seeds.")
flags.DEFINE_list(
    "rows",
    ["alone", "keras_io", "kd", "dkd", "dist", "kd_std", "mixup", "cutmix", "transfer"],
    "Rows of the table.",
)
flags.DEFINE_float(
    "kd_weight",
    tfkd.distill.distiller.DEFAULT_STUDENT_LOSS_WEIGHT,
    "student_loss_weight of the rows built on tfkd's KD (kd, kd_std, mixup, cutmix, transfer).",
)
flags.DEFINE_string("name", "comparison_cifar10", "Results file and RESULTS.md section name.")
flags.DEFINE_bool(
    "render_only", False, "Only rewrite the RESULTS.md section from the results file of --name."
)
flags.DEFINE_list(
    "merge",
    [],
    "With --render_only: results of other runs of the same "
    "configuration whose rows join the table (e.g. at another --kd_weight).",
)

BATCH = 128
LEARNING_RATE = 2e-3
AUGMENTATION = tfkd.data.Augmentation(flip=True, pad_crop=4)
# Each row: what it is, and the Distiller's loss and weight (None: the student alone). "KD"
# rows take tfkd's KD at --kd_weight (tfkd's default weight unless given).
ROWS = {
    "alone": ("student alone (cross-entropy on the labels)", None),
    "keras_io": (
        "keras.io recipe: KD T=4, student_loss_weight 0.1",
        dict(loss=tfkd.losses.KD(temperature=4.0), student_loss_weight=0.1),
    ),
    "kd": ("tfkd KD: T={T:g}, student_loss_weight {w:g}", dict(loss=tfkd.losses.KD())),
    "dkd": (
        "DKD alpha=1 beta=2 T=4, student_loss_weight 0.5, warm-up over a tenth",
        dict(
            loss=tfkd.losses.DKD(alpha=1.0, beta=2.0, temperature=4.0),
            student_loss_weight=0.5,
        ),
    ),
    "dist": (
        "DIST beta=gamma=2 T=4, student_loss_weight 0.5",
        dict(
            loss=tfkd.losses.DIST(beta=2.0, gamma=2.0, temperature=4.0),
            student_loss_weight=0.5,
        ),
    ),
    "kd_std": (
        "tfkd KD (T={T:g}, weight {w:g}) + logit standardization",
        dict(loss=tfkd.losses.KD(standardize=True)),
    ),
    # Sun et al.'s CIFAR-100 commands: --logit-stand --base-temp 2 --kd-weight 9 beside
    # mdistiller's CE weight 0.1, i.e. a hard-label share of 0.1 / 9.1.
    "kd_std_paper": (
        "KD + logit standardization, the paper's recipe: T=2, CE:KD weights 0.1:9 "
        "(student_loss_weight 0.011)",
        dict(
            loss=tfkd.losses.KD(temperature=2.0, standardize=True),
            student_loss_weight=0.1 / 9.1,
        ),
    ),
    "mixup": (
        "tfkd KD (T={T:g}, weight {w:g}) + consistent teaching, mixup (half the views mixed)",
        dict(loss=tfkd.losses.KD()),
    ),
    "cutmix": (
        "tfkd KD (T={T:g}, weight {w:g}) + consistent teaching, cutmix (half the views mixed)",
        dict(loss=tfkd.losses.KD()),
    ),
    "transfer": (
        "tfkd KD (T={T:g}, weight {w:g}) + the unlabeled images (transfer set)",
        dict(loss=tfkd.losses.KD()),
    ),
    # Settings chosen per seed by tfkd.distill.calibration's race on the validation images (the
    # pipeline's --loss=auto); the winner continues from its probe to the full budget.
    "calibrated": (
        "calibrated (--loss=auto: each candidate trains the first fifth of the "
        "schedule, the winner continues): {choices}",
        "calibrated",
    ),
}
# The fixed recipes the calibrated row must come within half a point of (issue #26).
FIXED_ROWS = ("keras_io", "kd", "dist")
SMOKE = {
    "data": common.CIFAR_SAMPLE,
    "train_images": 48,
    "unlabeled_images": 16,
    "label_fraction": 0.5,
    "test_images": 20,
    "teacher": "cnn_small",
    "student": "cnn_tiny",
    "teacher_epochs": 1,
    "student_epochs": 1,
    "views": 2,
    "seeds": ["0"],
    "rows": ["alone", "mixup", "transfer", "calibrated"],
    "validation_images": 8,
    "name": "comparison_smoke",
}


def _unlabeled(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.map(lambda image, label: (image, tf.constant(tfkd.data.UNLABELED, tf.int64)))


def _count(dataset: tf.data.Dataset) -> int:
    return int(dataset.reduce(0, lambda n, _: n + 1))


def _data(splits):
    """The labeled images, the images the transfer row learns from (both of known size), and
    their counts."""
    train = common.shuffled(splits.train)
    subset = train.take(FLAGS.train_images).cache()
    subset_count = _count(subset)  # fewer than asked when the split is smaller
    if FLAGS.label_fraction < 1.0:
        size = tuple(splits.preprocessing.image_size)
        own = dataclasses.replace(
            splits,
            train=subset,
            sizes=dict(splits.sizes, train=subset_count),
            resolutions={size: (subset, splits.validation, splits.test)},
        )
        subset = tfkd.data.hide_labels(own, FLAGS.label_fraction, seed=0).train.cache()
    labeled = subset.filter(lambda image, label: label != tfkd.data.UNLABELED).cache()
    count = _count(labeled)
    # A filtered dataset's size is unknown to tf.data; schedules need it.
    labeled = labeled.apply(tf.data.experimental.assert_cardinality(count))
    transfer_set = subset.concatenate(
        _unlabeled(train.skip(FLAGS.train_images).take(FLAGS.unlabeled_images))
    ).cache()
    transfer_count = _count(transfer_set)
    transfer_set = transfer_set.apply(tf.data.experimental.assert_cardinality(transfer_count))
    return (
        labeled,
        transfer_set,
        {"train_images": subset_count, "labeled": count, "transfer_images": transfer_count},
    )


def main(argv):
    del argv
    if FLAGS.render_only:
        return render_only()
    common.apply_smoke(SMOKE)
    unknown = sorted(set(FLAGS.rows) - set(ROWS))
    if unknown:
        raise app.UsageError(f"Unknown rows {unknown}; choose from {list(ROWS)}.")
    started = time.time()
    keras.utils.set_random_seed(0)
    splits = tfkd.data.load(f"folder:{FLAGS.data}", seed=0)
    prep = splits.preprocessing
    labeled, transfer_set, sizes = _data(splits)
    labeled_count = sizes["labeled"]
    test_images = common.shuffled(splits.test).take(FLAGS.test_images).cache()
    test = tfkd.data.batches(test_images, prep, 256)
    validation = tfkd.data.batches(
        common.shuffled(splits.train)
        .skip(FLAGS.train_images + FLAGS.unlabeled_images)
        .take(FLAGS.validation_images)
        .cache(),
        prep,
        256,
    )
    steps = FLAGS.steps or FLAGS.student_epochs * math.ceil(labeled_count / BATCH)
    epochs = FLAGS.student_epochs
    steps_per_epoch = max(1, steps // epochs)
    steps = steps_per_epoch * epochs

    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    shape, classes = prep.input_shape, splits.num_classes
    teacher = tfkd.models.build(FLAGS.teacher, shape, classes)
    teacher_batches = tfkd.data.batches(
        labeled, prep, BATCH, shuffle=True, seed=0, augmentation=AUGMENTATION
    )
    teacher.compile(_optimizer(math.ceil(labeled_count / BATCH) * FLAGS.teacher_epochs), ce)
    teacher.fit(teacher_batches, epochs=FLAGS.teacher_epochs, verbose=2)
    results = {
        "teacher": classification.keras_accuracy(teacher, test),
        "accuracy": {},
        **sizes,
        "steps": steps,
    }
    print("teacher", results["teacher"], flush=True)
    distilled_data = transfer_set if FLAGS.distill_on == "all" else labeled

    caches = {}

    def cache_for(row):
        key = (
            row
            if row in (*tfkd.data.mixing.KINDS, "transfer")
            else ("transfer" if FLAGS.distill_on == "all" else "plain")
        )
        if key not in caches:
            mixing = tfkd.data.mixing.Mixing(key) if key in tfkd.data.mixing.KINDS else None
            cache_started = time.time()
            caches[key] = tfkd.distill.teacher_cache.build(
                teacher,
                transfer_set if key == "transfer" else labeled,
                prep,
                augmentation=AUGMENTATION,
                views=FLAGS.views,
                seed=0,
                mixing=mixing,
            )
            results.setdefault("cache_seconds", {})[key] = time.time() - cache_started
        return caches[key]

    for seed_text in FLAGS.seeds:
        seed = int(seed_text)
        fresh = common.fresh_students(FLAGS.student, shape, classes, seed + 1)
        for row in FLAGS.rows:
            student = fresh()
            settings = _settings(row)
            row_started = time.time()
            if row == "calibrated":
                chosen, trainer = _race(
                    fresh, cache_for(row), distilled_data, prep, seed, steps, validation
                )
                results.setdefault("calibration", {})[seed_text] = chosen.to_dict()
                print("calibrated", chosen.candidate, chosen.reason, flush=True)
                student = trainer.student
                probe = tfkd.distill.calibration.probe_steps(steps)
                if steps > probe:  # a one-step budget is all probe
                    trainer.fit(
                        _cached(cache_for(row), distilled_data, prep, seed, skip=probe),
                        epochs=1,
                        steps_per_epoch=steps - probe,
                        verbose=2,
                    )
            elif settings is None:
                trainer = student
                trainer.compile(_optimizer(steps), ce)
                data = tfkd.data.batches(
                    labeled, prep, BATCH, shuffle=True, seed=seed, augmentation=AUGMENTATION
                )
                trainer.fit(
                    data.repeat(), epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=2
                )
            else:
                warmup = steps // 10 if row == "dkd" else 0
                trainer = tfkd.Distiller(
                    student, None, distillation_warmup_steps=warmup, **settings
                )
                trainer.compile(optimizer=_optimizer(steps))
                data = _cached(
                    cache_for(row),
                    transfer_set if row == "transfer" else distilled_data,
                    prep,
                    seed,
                )
                trainer.fit(data, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=2)
            accuracy = classification.keras_accuracy(student, test)
            results["accuracy"].setdefault(row, {})[seed_text] = accuracy
            results.setdefault("row_seconds", {}).setdefault(row, {})[seed_text] = (
                time.time() - row_started
            )
            print(row, seed, accuracy, flush=True)

    minutes = common.write_results(
        FLAGS.name,
        results,
        started,
        (
            "train_images",
            "label_fraction",
            "unlabeled_images",
            "test_images",
            "teacher",
            "student",
            "teacher_epochs",
            "student_epochs",
            "steps",
            "views",
            "seeds",
            "rows",
            "kd_weight",
            "validation_images",
            "distill_on",
        ),
    )
    common.write_section(FLAGS.name, section(results, minutes))


def _race(fresh, cache, data, prep, seed: int, steps: int, validation):
    """tfkd.distill.calibration's race: each candidate trains the first `probe_steps(steps)`
    steps of the whole budget's schedule from the row's initial weights, they are compared on the
    validation images, and the winner's trainer (weights and optimizer) is returned to carry on.
    Returns the calibration and the winner's Distiller."""
    probe = tfkd.distill.calibration.probe_steps(steps)
    correct, seconds, trainers = {}, {}, {}
    for name in tfkd.distill.calibration.CANDIDATES:
        loss, weight = tfkd.distill.calibration.candidate_loss(name)
        trainer = tfkd.Distiller(fresh(), None, loss=loss, student_loss_weight=weight)
        trainer.compile(optimizer=_optimizer(steps))
        started = time.time()
        trainer.fit(_cached(cache, data, prep, seed), epochs=1, steps_per_epoch=probe, verbose=0)
        # Batch statistics of the probe's weights, not Keras' lagging moving averages.
        measured = batch_norm.precise_batch_norm(trainer.student, _cached(cache, data, prep, seed))
        correct[name] = classification.correct_predictions(measured, validation)
        seconds[name] = time.time() - started
        trainers[name] = trainer
    chosen = dataclasses.replace(
        tfkd.distill.calibration.choose(correct, tfkd.measure.stats.DEFAULT_ALPHA),
        probe_seconds=seconds,
    )
    return chosen, trainers[chosen.candidate]


def _cached(cache, data, prep, seed: int, skip: int = 0) -> tf.data.Dataset:
    """The distilled rows' batches, repeated; `skip` batches in, to continue a probe where it
    stopped (the shuffle is seeded, so the continued row sees what the fixed row sees)."""
    return (
        tfkd.distill.teacher_cache.batches(cache, data, prep, BATCH, shuffle=True, seed=seed)
        .repeat()
        .skip(skip)
    )


def _settings(row: str):
    """The Distiller's keyword arguments of `row` (None: the student alone)."""
    settings = ROWS[row][1]
    if not isinstance(settings, dict) or "student_loss_weight" in settings:
        return settings  # None: alone; "calibrated": the race
    return dict(settings, student_loss_weight=FLAGS.kd_weight)


KD_WEIGHTED_ROWS = ("kd", "kd_std", "mixup", "cutmix", "transfer")


def _describe(name: str, merged: dict, results: dict) -> str:
    """What table row `name` is; `merged` maps the rows of other runs (--merge) to their row
    and --kd_weight."""
    row, weight = merged.get(name, (name, FLAGS.kd_weight))
    choices = "; ".join(
        f"seed {seed}: {c['candidate']} (probes: "
        + ", ".join(f"{n} {100 * a:.1f}" for n, a in c["probe_accuracy"].items())
        + ")"
        for seed, c in sorted(results.get("calibration", {}).items())
    )
    return ROWS[row][0].format(T=tfkd.losses.DEFAULT_TEMPERATURE, w=weight, choices=choices)


def calibration_verdict(rows: list[dict]) -> str:
    """How the calibrated row compares with the best fixed recipe (the bar: within 0.5)."""
    by_row = {r["row"]: r for r in rows}
    # Merged rows are named "kd (w=0.9)": the recipe is the part before the weight.
    fixed = [r for r in rows if r["row"].split(" (w=")[0] in FIXED_ROWS]
    if "calibrated" not in by_row or not fixed:
        return ""
    best = max(fixed, key=lambda r: r["mean"])
    behind = best["mean"] - by_row["calibrated"]["mean"]
    return (
        f"\nCalibrated against the best fixed recipe (`{best['row']}`, "
        f"{best['mean']:.2f}%): {-behind:+.2f} points "
        f"({'within' if behind <= 0.5 else 'NOT within'} the 0.5-point bar).\n"
    )


def _optimizer(steps):
    return training.optimizer("adam", LEARNING_RATE, steps)


def summary(results: dict, rows, seeds) -> list[dict]:
    """Per row: mean and std over seeds (points), gain over the student alone, per-seed values."""
    accuracy = results["accuracy"]
    alone = np.array([accuracy["alone"][s] for s in seeds]) if "alone" in accuracy else None
    out = []
    for row in rows:
        values = 100 * np.array([accuracy[row][s] for s in seeds])
        gains = values - 100 * alone if alone is not None else None
        out.append(
            {
                "row": row,
                "mean": float(values.mean()),
                "std": float(values.std()),
                "gain": None if gains is None else float(gains.mean()),
                "gain_std": None if gains is None else float(gains.std()),
                "values": values.tolist(),
            }
        )
    return out


def section(results: dict, minutes: float, merged: dict | None = None) -> str:
    merged = merged or {}
    rows = summary(results, FLAGS.rows, FLAGS.seeds)
    lines = []
    for r in rows:
        gain = "" if r["gain"] is None else f"{r['gain']:+.2f} ± {r['gain_std']:.2f}"
        lines.append(
            f"| {r['row']} | {_describe(r['row'], merged, results)} | "
            f"{r['mean']:.2f} ± {r['std']:.2f} | {gain} | "
            + " ".join(f"{v:.2f}" for v in r["values"])
            + " |"
        )
    distilled = [r for r in rows if r["row"] != "alone"]
    best = max(distilled, key=lambda r: r["mean"]) if distilled else None
    below = [r["row"] for r in distilled if r["gain"] is not None and r["gain"] < 0]
    labels = (
        f"{results['labeled']} of them labeled ({100 * FLAGS.label_fraction:g}%, stratified)"
        if FLAGS.label_fraction < 1
        else "all labeled"
    )
    unlabeled = results["transfer_images"] - results["labeled"]
    keras_io = (
        " (the keras.io recipe itself calls the teacher every step)"
        if "keras_io" in FLAGS.rows
        else ""
    )
    mixed = (
        "\n- Mixed views (consistent teaching) are taught by the teacher alone; the other "
        "half keep their labels."
        if set(tfkd.data.mixing.KINDS) & set(FLAGS.rows)
        else ""
    )
    transfer = (
        f"\n- The transfer row also learns from {unlabeled} images without labels "
        "(the teacher's soft targets only)."
        if "transfer" in FLAGS.rows
        else ""
    )
    return f"""
## Distillation settings side by side on CIFAR-10 (`comparison_cifar10.py`, `{FLAGS.name}`)

{common.machine()}; {minutes:.0f} min.
- Data: {results["train_images"]} CIFAR-10 training images, {labels}, flip + pad-crop 4;
  distilled rows learn from {
        "every training image" if FLAGS.distill_on == "all" else "the labeled images"
    }; {FLAGS.validation_images} held-out validation images;
  {FLAGS.test_images} test images, a seeded sample (one image = {100 / FLAGS.test_images:.2f}
  points).
- Teacher {FLAGS.teacher}, trained on the labeled images for {FLAGS.teacher_epochs} epochs:
  {100 * results["teacher"]:.2f}%.
- Student {FLAGS.student}. **Every row trains for the same {results["steps"]} steps** of batch
  {BATCH} (Adam 2e-3, cosine decay), from the same initial weights per seed (seeds
  {", ".join(FLAGS.seeds)}); final weights, no early stopping.
- Every distilled row reads the teacher's logits from a teacher cache of {FLAGS.views}
  augmented views per image{keras_io}.{mixed}{transfer}

| row | setting | accuracy % (mean ± std) | gain over alone (mean ± std) | per seed |
|---|---|---|---|---|
{chr(10).join(lines)}

Best distilled row: `{best["row"] if best else "-"}`. Below the student alone:
{", ".join(f"`{r}`" for r in below) or "none"}.
{calibration_verdict(rows)}{race_cost(results)}"""


def race_cost(results: dict) -> str:
    """What the race added per seed: its losing probes' time against the rest of the calibrated
    row (the chosen recipe's own training, its probe included)."""
    costs = []
    for seed, chosen in sorted(results.get("calibration", {}).items()):
        if not chosen.get("probe_seconds"):
            continue  # results of the earlier probes, which did not time themselves
        added = tfkd.distill.calibration.Calibration.from_dict(chosen).added_seconds()
        own = results["row_seconds"]["calibrated"][seed] - added
        costs.append(f"seed {seed}: {added:.0f} s, +{100 * added / own:.0f}%")
    return (
        (
            "\nThe race's losing probes added to the calibrated row's own training time: "
            + "; ".join(costs)
            + ".\n"
        )
        if costs
        else ""
    )


def render_only() -> None:
    """Rewrites the RESULTS.md section from benchmarks/results/<name>.json (no training), with
    the rows of the --merge runs added: runs of the same configuration, which is checked (the
    same teacher accuracy and the same student alone, seed by seed)."""
    merge = list(FLAGS.merge)
    payload = common.read_json(FLAGS.name)
    common.restore_flags(payload)
    rows, minutes, merged = list(FLAGS.rows), payload["minutes"], {}
    for other_name in merge:
        other = common.read_json(other_name)
        same = (
            other["teacher"] == payload["teacher"]
            and other["accuracy"]["alone"] == payload["accuracy"]["alone"]
        )
        if not same:
            raise app.UsageError(
                f"{other_name} is not the same configuration as {FLAGS.name} "
                "(another teacher or student alone)."
            )
        weight = other["flags"]["kd_weight"]
        for row, values in other["accuracy"].items():
            name = f"{row} (w={weight:g})" if row in KD_WEIGHTED_ROWS else row
            if name not in payload["accuracy"] and row in ROWS:
                payload["accuracy"][name] = values
                merged[name] = (row, weight)
                rows.append(name)
        minutes += other["minutes"]
    FLAGS.rows = rows
    common.write_section(FLAGS.name, section(payload, minutes, merged))


if __name__ == "__main__":
    app.run(main)
