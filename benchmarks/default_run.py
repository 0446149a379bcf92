r"""The README's main job over seeds: does the default run ship a distilled student that wins?

    python -m benchmarks.default_run --seeds=0,1,2

Runs `python -m pipelines.distill --flagfile=pipelines/configs/digits.flags --seed=S` (what
`./scripts/run` runs) once per seed, each in its own process, and records what its report says:
the distilled student's and the student alone's test accuracy, the gain with its paired standard
error, which student shipped, and the wall time. The mean gain's standard error combines the
runs' paired standard errors (independent test splits: the seed also draws the split).

Writes benchmarks/results/default_run.json and its section of RESULTS.md.
"""

import math
import os
import time

from absl import app, flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the runs (split, shuffling, weights).")
flags.DEFINE_list("pipeline_flags", [], "Extra flags for every run (after the recipe).")

RECIPE = os.path.join("pipelines", "configs", "digits.flags")
SMOKE = {
    "seeds": ["0"],
    "pipeline_flags": [
        "--teacher_epochs=1",
        "--student_epochs=1",
        "--qat_epochs=0",
        "--modes=float32",
        "--benchmark_runs=3",
        "--max_drop_points=100",
    ],
}


def _run(seed: int, out_dir: str) -> dict:
    started = time.time()
    report = common.run_pipeline(RECIPE, out_dir, f"--seed={seed}", *FLAGS.pipeline_flags)
    summary = report["summary"]
    accuracy = {m["name"]: m["accuracy"] for m in report["models"]}
    return {
        "seed": seed,
        "seconds": time.time() - started,
        "distilled": accuracy["student"],
        "alone": accuracy["baseline"],
        "teacher": accuracy["teacher"],
        "gain": summary["kd_gain"],
        "standard_error": summary["kd_gain_standard_error"],
        "p_value": summary["kd_gain_test"]["p_value"],
        "verdict": summary["kd_gain_test"]["verdict"],
        "shipped": summary["selection"]["shipped"],
        "test_images": summary["test_images"],
    }


def _markdown(result: dict) -> str:
    runs = result["runs"]
    rows = [
        f"| {r['seed']} | {100 * r['teacher']:.2f} | {100 * r['alone']:.2f} | "
        f"{100 * r['distilled']:.2f} | {100 * r['gain']:+.2f} ± "
        f"{100 * r['standard_error']:.2f} | {r['p_value']:.2g} ({r['verdict']}) | "
        f"{'distilled' if r['shipped'] == 'student' else 'alone'} | "
        f"{r['seconds'] / 60:.1f} |"
        for r in runs
    ]
    return "\n".join(
        [
            "## The default run over seeds (`benchmarks/default_run.py`)",
            "",
            f"Measured on {result['machine']}: `python -m pipelines.distill "
            f"--flagfile={RECIPE} --seed=S` (the README's main job) once per seed"
            + (f", with {' '.join(result['pipeline_flags'])}" if result["pipeline_flags"] else "")
            + ". Test accuracy (%) on each seed's held-out split; gain ± its paired standard "
            "error, and McNemar's exact p-value on the same test images as the report states it.",
            "",
            "| seed | teacher | student alone | distilled | gain, points | p (verdict) | shipped "
            "| minutes |",
            "|---:|---:|---:|---:|---:|---|---|---:|",
            *rows,
            "",
            f"Mean gain over {len(runs)} seed(s): **{100 * result['mean_gain']:+.2f} ± "
            f"{100 * result['mean_gain_standard_error']:.2f} points**; the distilled student "
            f"shipped in {sum(r['shipped'] == 'student' for r in runs)} of {len(runs)} runs.",
        ]
    )


def main(argv):
    del argv
    common.apply_smoke(SMOKE)
    work = common.work_dir("default_run")
    runs = [_run(int(seed), os.path.join(work, f"seed{seed}")) for seed in FLAGS.seeds]
    gains = [r["gain"] for r in runs]
    result = {
        "machine": common.machine(),
        "pipeline_flags": FLAGS.pipeline_flags,
        "runs": runs,
        "mean_gain": sum(gains) / len(gains),
        "mean_gain_standard_error": math.sqrt(sum(r["standard_error"] ** 2 for r in runs))
        / len(runs),
    }
    common.write_json("default_run", result)
    common.write_section("default_run", _markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    app.run(main)
