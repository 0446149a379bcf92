"""Helpers shared by the benchmark scripts: results files, the RESULTS.md sections, and the smoke
mode (`--smoke`: tiny sizes on the test fixtures, results in a temporary directory) with which
the fast tests check that every script still runs."""

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import tensorflow as tf
from absl import app, flags

from tfkd import files

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_MD = os.path.join(HERE, "RESULTS.md")
RESULTS_DIR = os.path.join(HERE, "results")
# Real CIFAR-10 JPEGs shipped with the tests: the smoke mode's image folder.
CIFAR_SAMPLE = os.path.join(os.path.dirname(HERE), "tests", "fixtures", "cifar10_sample")

FLAGS = flags.FLAGS
flags.DEFINE_bool(
    "smoke",
    False,
    "Tiny sizes on the test fixtures, results written to a "
    "temporary directory instead of benchmarks/: checks that the script runs.",
)
_smoke_dir = None


def apply_smoke(overrides: dict) -> None:
    """With --smoke, sets the flags in `overrides` (the script's tiny sizes); then checks that a
    script reading images was given them."""
    if FLAGS.smoke:
        for name, value in overrides.items():
            FLAGS[name].value = value
    if "data" in FLAGS and FLAGS.data is None:
        raise app.UsageError(
            "Pass --data=PATH, a CIFAR-10 image folder (PATH/train/<class>/*.jpg "
            "and PATH/test/<class>/*.jpg), or --smoke."
        )


def work_dir(name: str) -> str:
    """A new directory for a script's runs and generated data: inside the smoke directory in
    smoke mode (it goes with it), else a temporary directory the script's runs stay in."""
    return tempfile.mkdtemp(prefix=f"tfkd_{name}_", dir=_output_dir() if FLAGS.smoke else None)


def _output_dir() -> str:
    """benchmarks/results, or a temporary directory in smoke mode."""
    global _smoke_dir
    if not FLAGS.smoke:
        return RESULTS_DIR
    if _smoke_dir is None:
        _smoke_dir = os.environ.get("TFKD_SMOKE_DIR") or tempfile.mkdtemp(prefix="tfkd_smoke_")
    return _smoke_dir


def shuffled(dataset: tf.data.Dataset, seed: int = 0) -> tf.data.Dataset:
    """`dataset` in one fixed seeded order, the same at every iteration. tfkd lists an image
    folder class by class, so a plain prefix (`take(n)`) would hold the first classes only;
    `shuffled(d).take(n)` is a sample of every class, and `.skip(n)` the rest."""
    size = int(dataset.cardinality())
    buffer = size if size > 0 else 100_000
    return dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)


def machine() -> str:
    """Where a figure was measured, to print next to it."""
    return (
        f"CPU only ({os.cpu_count()} cores, {platform.machine()}), TensorFlow "
        f"{tf.__version__}, no GPU"
    )


def write_section(name: str, markdown: str) -> None:
    """Replaces (or appends) the section `name` of RESULTS.md, leaving the others intact (a
    RESULTS.md of its own in smoke mode)."""
    results_md = RESULTS_MD if not FLAGS.smoke else os.path.join(_output_dir(), "RESULTS.md")
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = (
        open(results_md, encoding="utf-8").read()
        if os.path.exists(results_md)
        else (
            "# Benchmark results\n\nWritten by the scripts in `benchmarks/`; each section says how "
            "it was measured.\n"
        )
    )
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    files.write_text(results_md, text)


def read_json(name: str) -> dict:
    """benchmarks/results/<name>.json."""
    with open(os.path.join(RESULTS_DIR, f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def restore_flags(payload: dict) -> None:
    """Puts the flags a results file was measured with back into FLAGS (to write its RESULTS.md
    section again without measuring)."""
    for flag, value in payload["flags"].items():
        FLAGS[flag].value = value


def fresh_students(name: str, input_shape, num_classes: int, seed: int):
    """A builder of `name` students that all start from the same weights (drawn with `seed`),
    with the random state reset to `seed` each time: within a seed, methods differ only by
    what they train on."""
    # Imported here: scripts such as train_speed import tfkd only once their flags are parsed.
    import tfkd
    from tfkd.keras import keras

    keras.utils.set_random_seed(seed)
    initial = tfkd.models.build(name, input_shape, num_classes).get_weights()

    def fresh():
        keras.utils.set_random_seed(seed)
        student = tfkd.models.build(name, input_shape, num_classes)
        student.set_weights(initial)
        return student

    return fresh


def write_results(name: str, results: dict, started: float, flag_names: Sequence[str]) -> float:
    """Writes `results` with the minutes since `started`, the machine and the named flags'
    values as benchmarks/results/<name>.json; returns the minutes."""
    minutes = (time.time() - started) / 60
    write_json(
        name,
        {
            **results,
            "minutes": minutes,
            "machine": machine(),
            "flags": {f: flags.FLAGS[f].value for f in flag_names},
        },
    )
    return minutes


def write_json(name: str, payload: dict) -> str:
    """Writes benchmarks/results/<name>.json (the smoke directory in smoke mode)."""
    path = os.path.join(_output_dir(), f"{name}.json")
    files.write_text(path, json.dumps(payload, indent=2, sort_keys=True))
    return path


def run_pipeline(recipe: str, out_dir: str, *pipeline_flags: str) -> dict:
    """`python -m pipelines.distill --flagfile=RECIPE --out_dir=OUT_DIR PIPELINE_FLAGS...` in a
    process of its own from the repository root (what `./scripts/run` does); its report.json.
    Exits naming the flags and the end of its stderr when the run fails."""
    root = os.path.dirname(HERE)
    command = [
        sys.executable,
        "-m",
        "pipelines.distill",
        f"--flagfile={recipe}",
        f"--out_dir={out_dir}",
        *pipeline_flags,
    ]
    result = subprocess.run(
        command,
        cwd=root,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=root),
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[3:])} failed:\n{result.stderr[-3000:]}")
    with open(os.path.join(out_dir, "report.json"), encoding="utf-8") as handle:
        return json.load(handle)
