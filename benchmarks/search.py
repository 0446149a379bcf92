r"""The search against the default recipe: does a 12-trial search find a better student?

    python -m benchmarks.search                               # digits, the README's recipe
    python -m benchmarks.search --dataset=cifar10 --data=PATH_TO_CIFAR10

Runs `python -m pipelines.search` (base recipe + `--trials` trials on Ray, Optuna's
multi-objective TPE) on 2 CPU cores and records its wall time, the Pareto front, and whether a
front model dominates (or equals) the base recipe's shipped int8 model: the QAD student in int8,
what tfkd ships for Android. On CIFAR-10 the recipe is a subset (`--per_class` training images
per class, the test split's first `--test_per_class`), small enough for a search on a CPU.

Writes benchmarks/results/search_<dataset>.json and its section of RESULTS.md.
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

from benchmarks import common
from pipelines.search import report as search_report

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "digits", ["digits", "cifar10"], "Which recipe to search.")
flags.DEFINE_string("data", "", "CIFAR-10 image folder (PATH/train/<class>/*.jpg, test/).")
flags.DEFINE_integer("trials", 12, "Trials of the search.")
flags.DEFINE_integer("per_class", 300, "CIFAR-10: training images per class of the subset.")
flags.DEFINE_integer("test_per_class", 100, "CIFAR-10: test images per class of the subset.")
flags.DEFINE_string("work_dir", None, "Where the search goes (default: temporary).")
flags.DEFINE_bool("render", False, "Only rewrite the RESULTS.md section from the results file.")

ROOT = os.path.dirname(common.HERE)
CONFIGS = os.path.join(ROOT, "pipelines", "configs")
SHIPPED = "student_qad_int8"
# The CIFAR-10 subset's recipe: the cifar10.flags models, budgets a CPU search can afford.
CIFAR_FLAGS = [
    "--teacher=resnet20",
    "--student=resnet8",
    "--teacher_epochs=15",
    "--student_epochs=15",
    "--batch_size=64",
    "--learning_rate=0.002",
    "--flip",
    "--pad_crop=4",
    "--loss=kd",
    "--temperature=4.0",
    "--student_loss_weight=0.5",
    "--qat_epochs=2",
    "--qat_learning_rate=0.0001",
    "--modes=float16,dynamic,int8",
    "--representative_size=200",
    "--max_drop_points=2.0",
    "--threads=1",
    "--benchmark_runs=50",
    "--seed=0",
    "--select=best",
]
SMOKE = {"trials": 1}
SMOKE_FLAGS = [
    "--teacher_epochs=1",
    "--student_epochs=1",
    "--qat_epochs=1",
    "--modes=int8",
    "--benchmark_runs=3",
    "--trial_memory_gb=0.5",
    "--max_drop_points=100",
]


def _cifar_subset(root: str) -> str:
    """A folder of symbolic links: --per_class training and --test_per_class test images."""
    subset = os.path.join(root, "cifar10_subset")
    for split, count in (("train", FLAGS.per_class), ("test", FLAGS.test_per_class)):
        for name in sorted(os.listdir(os.path.join(FLAGS.data, split))):
            source = os.path.join(FLAGS.data, split, name)
            target = os.path.join(subset, split, name)
            os.makedirs(target, exist_ok=True)
            for image in sorted(os.listdir(source))[:count]:
                if not os.path.exists(os.path.join(target, image)):
                    os.symlink(os.path.join(source, image), os.path.join(target, image))
    return subset


def _command(work: str) -> list:
    if FLAGS.dataset == "digits":
        recipe = [f"--flagfile={os.path.join(CONFIGS, 'digits.flags')}"]
        space = os.path.join(CONFIGS, "digits.space")
    else:
        recipe = [f"--dataset=folder:{_cifar_subset(work)}", *CIFAR_FLAGS]
        space = os.path.join(CONFIGS, "cifar10.space")
    return [
        sys.executable,
        "-m",
        "pipelines.search",
        *recipe,
        f"--space={space}",
        f"--trials={FLAGS.trials}",
        "--objective=accuracy,latency_ms",
        f"--out_dir={os.path.join(work, 'search')}",
        *(SMOKE_FLAGS if FLAGS.smoke else []),
    ]


def _verdict(report: dict) -> dict:
    """Whether the front beats the base recipe's shipped int8 model (latencies within the
    search's tolerance counting as equal, as in its report)."""
    shipped = next(b for b in report["base"] if b["variant"] == SHIPPED)
    return {
        "shipped": shipped,
        **search_report.against(
            report["front"], shipped, report["objectives"], report["latency_tolerance"]
        ),
    }


def _markdown(result: dict) -> str:
    report, verdict = result["report"], result["verdict"]
    shipped = verdict["shipped"]
    rows = [
        f"| {p['name']} | {100 * p['accuracy']:.2f} | {p['latency_ms']:.4g} | "
        f"{p['size_kb']:.1f} | {p['settings']} |"
        for p in result["front"]
    ]
    met = (
        f"**Met**: {', '.join(verdict['dominating'])} dominate(s) it"
        if verdict["dominating"]
        else f"**Met**: {', '.join(verdict['equal'])} equal(s) it"
        if verdict["equal"]
        else "**Not met**: no front model dominates or equals it"
    )
    return "\n".join(
        [
            f"## Search on {result['dataset']}: {report['trials']} trials (`benchmarks/search.py`)",
            "",
            f"Measured on {result['machine']}: `python -m pipelines.search` with Ray on this "
            "machine "
            f"(2 trials at a time, one CPU each) and Optuna's multi-objective TPE; the base recipe "
            f"run once first (its teacher shared). Wall time **{result['seconds'] / 60:.1f} min** "
            f"for the base run and {report['finished']} finished trial(s) "
            f"({len(report['failed'])} failed). Latencies: p50, one thread, measured again after "
            f"the search, one model at a time (median of 3; repeats of one file differed by up to "
            f"{100 * report['latency_spread']:.1f}%, and latencies within "
            f"{100 * report['latency_tolerance']:.0f}% count as equal).",
            "",
            f"Base recipe's shipped int8 model (QAD): {100 * shipped['accuracy']:.2f}%, "
            f"{shipped['latency_ms']:.4g} ms, {shipped['size_kb']:.1f} KiB. {met}.",
            "",
            "Pareto front:",
            "",
            "| trial | accuracy, % | p50 latency, ms | size, KiB | settings |",
            "|---|---:|---:|---:|---|",
            *rows,
        ]
    )


def main(argv):
    del argv
    common.apply_smoke(SMOKE)
    if FLAGS.render:
        # Rewrites the RESULTS.md section from the results file (after a wording change).
        with open(
            os.path.join(common.RESULTS_DIR, f"search_{FLAGS.dataset}.json"), encoding="utf-8"
        ) as handle:
            common.write_section(f"search_{FLAGS.dataset}", _markdown(json.load(handle)))
        return
    if FLAGS.dataset == "cifar10" and not FLAGS.data:
        raise app.UsageError("--dataset=cifar10 needs --data=PATH (a CIFAR-10 image folder).")
    work = FLAGS.work_dir or common.work_dir("search")
    command = _command(work)
    started = time.time()
    with open(os.path.join(work, "search.log"), "w", encoding="utf-8") as log:
        status = subprocess.run(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=ROOT),
        ).returncode
    seconds = time.time() - started
    if status != 0:
        raise SystemExit(f"the search failed (status {status}); see {work}/search.log")
    with open(os.path.join(work, "search", "report.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    front = [
        {
            "name": p["name"],
            "accuracy": p["accuracy"],
            "latency_ms": p["latency_ms"],
            "size_kb": p["size_kb"],
            "settings": ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(p["params"].items())
            ),
        }
        for p in report["front"]
    ]
    result = {
        "dataset": FLAGS.dataset,
        "machine": common.machine(),
        "seconds": seconds,
        "command": [
            c.replace(ROOT + os.sep, "")
            for c in command[1:]
            if not c.startswith(("--out_dir", "--dataset"))
        ],
        "verdict": _verdict(report),
        "front": front,
        "report": {
            k: report[k]
            for k in (
                "trials",
                "finished",
                "failed",
                "objectives",
                "recommendation",
                "latency_spread",
                "latency_tolerance",
            )
        },
    }
    # No machine paths in the results: file paths stay in the search directory's own report.
    result["verdict"]["shipped"] = {
        k: v for k, v in result["verdict"]["shipped"].items() if k != "file"
    }
    common.write_json(f"search_{FLAGS.dataset}", result)
    common.write_section(f"search_{FLAGS.dataset}", _markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    app.run(main)
