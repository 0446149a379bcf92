r"""Student alone vs distilled student on digits, over seeds, budgets and KD settings.

    python -m benchmarks.digits_kd --seeds=0,1,2 --budgets=20,40

With every label, distillation does not beat the student alone on digits at any of these
settings: why the default run (pipelines/configs/digits.flags) keeps 10% of the labels
(benchmarks/default_run.py measures it). For each seed one teacher is trained;
each student starts from the same initial weights as the baseline of that seed and budget.
Writes benchmarks/results/digits_kd.json and its section of RESULTS.md.
"""

import time

import numpy as np
from absl import app, flags

import tfkd
from benchmarks import common
from tfkd.distill import training
from tfkd.keras import keras
from tfkd.tasks.classification import keras_accuracy

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (data split, shuffling, initialisation).")
flags.DEFINE_list("budgets", ["20", "40"], "Student budgets (baseline and distillation).")
flags.DEFINE_list(
    "settings", ["0.5:1", "0.5:2", "0.5:4", "0.1:4"], "student_loss_weight:temperature pairs."
)
flags.DEFINE_integer("teacher_epochs", 60, "Epochs of each seed's teacher.")

SMOKE = {"seeds": ["0"], "budgets": ["1"], "settings": ["0.5:1"], "teacher_epochs": 1}
BATCH_SIZE = 64


def main(argv):
    del argv
    common.apply_smoke(SMOKE)
    started = time.time()
    settings = [tuple(float(v) for v in s.split(":")) for s in FLAGS.settings]
    results = []
    for seed in map(int, FLAGS.seeds):
        keras.utils.set_random_seed(seed)
        splits = tfkd.data.load("digits", seed=seed)
        prep = splits.preprocessing
        train = tfkd.data.batches(
            splits.train,
            prep,
            BATCH_SIZE,
            shuffle=True,
            seed=seed,
            augmentation=tfkd.data.Augmentation(flip=False, pad_crop=1),
        )
        validation = tfkd.data.batches(splits.validation, prep, 256)
        test = tfkd.data.batches(splits.test, prep, 256)
        teacher = training.train_classifier(
            tfkd.models.build("cnn_large", prep.input_shape, 10),
            train,
            validation,
            FLAGS.teacher_epochs,
            verbose=0,
        )
        teacher_accuracy = keras_accuracy(teacher, test)
        for epochs in map(int, FLAGS.budgets):
            keras.utils.set_random_seed(seed + 1)
            initial = tfkd.models.build("cnn_small", prep.input_shape, 10).get_weights()

            def fresh(shape=prep.input_shape, initial=initial):
                model = tfkd.models.build("cnn_small", shape, 10)
                model.set_weights(initial)
                return model

            baseline = training.train_classifier(fresh(), train, validation, epochs, verbose=0)
            row = {
                "seed": seed,
                "epochs": epochs,
                "teacher": teacher_accuracy,
                "baseline": keras_accuracy(baseline, test),
            }
            for weight, temperature in settings:
                student = training.distill(
                    fresh(),
                    teacher,
                    train,
                    validation,
                    epochs,
                    loss=tfkd.losses.KD(temperature),
                    student_loss_weight=weight,
                    verbose=0,
                )
                row[f"{weight:g}:{temperature:g}"] = keras_accuracy(student, test)
            results.append(row)
            print(row, flush=True)
    minutes = (time.time() - started) / 60
    common.write_json(
        "digits_kd", {"rows": results, "minutes": minutes, "machine": common.machine()}
    )
    keys = [f"{w:g}:{t:g}" for w, t in settings]
    lines = []
    for epochs in map(int, FLAGS.budgets):
        rows = [r for r in results if r["epochs"] == epochs]

        def mean(key, rows=rows):
            return 100 * np.mean([r[key] for r in rows])

        gains = " | ".join(f"{mean(k):.2f} ({mean(k) - mean('baseline'):+.2f})" for k in keys)
        lines.append(f"| {epochs} | {mean('teacher'):.2f} | {mean('baseline'):.2f} | {gains} |")
    header = " | ".join(f"KD w={k.split(':')[0]}, T={k.split(':')[1]}" for k in keys)
    per_seed = "\n".join(
        f"| {r['seed']} | {r['epochs']} | {100 * r['baseline']:.2f} | "
        + " | ".join(f"{100 * r[k]:.2f}" for k in keys)
        + " |"
        for r in results
    )
    common.write_section(
        "digits_kd",
        f"""
## Distillation on digits (`benchmarks/digits_kd.py`)

{common.machine()}; {minutes:.0f} min. Teacher cnn_large ({FLAGS.teacher_epochs} epochs), student
cnn_small (14.6k parameters), 1-pixel pad-crop augmentation, Adam 1e-3 with cosine decay; test
split of 359 images (one image = 0.28 points). Mean test accuracy (%) over seeds {FLAGS.seeds},
with the
gain over the student trained alone in parentheses; w is `student_loss_weight`.

| student epochs | teacher | student alone | {header} |
|---|---|---|{"---|" * len(keys)}
{chr(10).join(lines)}

Per seed:

| seed | epochs | student alone | {header} |
|---|---|---|{"---|" * len(keys)}
{per_seed}
""",
    )


if __name__ == "__main__":
    app.run(main)
