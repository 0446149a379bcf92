r"""Host latency: float32 teacher vs float32 and int8 student, cross-checked with litert-benchmark.

    python -m benchmarks.latency       # the CRD pair resnet32x4 -> resnet8x4

Latency does not depend on the weights' values, so untrained models are exported (int8
calibrated on random images); a pipeline run measures its own trained files in its benchmark
stage (RUN/benchmark/host.json and report.md). Each file is measured with
tfkd.measure.benchmark (LiteRT
interpreter, XNNPACK) and with `litert-benchmark` (shipped in ai-edge-litert) at the same thread
count, one after the other in this process. Writes benchmarks/results/latency.json and its
section of RESULTS.md.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags

import tfkd
from benchmarks import common
from tfkd import export
from tfkd.measure import benchmark

FLAGS = flags.FLAGS
flags.DEFINE_string("teacher", "resnet32x4", "Teacher model.")
flags.DEFINE_string("student", "resnet8x4", "Student model.")
flags.DEFINE_list("threads", ["1", "2"], "Thread counts.")
flags.DEFINE_integer("warmup", 10, "Warm-up runs.")
flags.DEFINE_integer("runs", 100, "Timed runs.")

SMOKE = {"teacher": "resnet8", "student": "cnn_tiny", "threads": ["1"], "warmup": 1, "runs": 3}


def _export_models(out: str) -> dict:
    prep = tfkd.data.Preprocessing((32, 32), 3, 1 / 255, (0.5,) * 3, (0.5,) * 3)
    images = np.random.default_rng(0).normal(size=(40, 32, 32, 3)).astype(np.float32)
    representative = export.RepresentativeSet(images, np.arange(40) % 10)
    paths = {}
    for role, name, modes in (
        ("teacher", FLAGS.teacher, ["float32"]),
        ("student", FLAGS.student, ["float32", "int8"]),
    ):
        model = tfkd.models.build(name, (32, 32, 3), 10)
        card = export.export(
            model,
            out,
            modes,
            preprocessing=prep,
            class_names=list("0123456789"),
            representative=representative,
            name=role,
        )
        for mode in modes:
            entry = card["variants"][f"{role}_{mode}"]
            paths[f"{role} {name} {mode}"] = os.path.join(out, entry["file"])
    return paths


def _litert_benchmark_median(path: str, threads: int) -> float:
    # Installed beside this interpreter, which may run without its virtualenv on PATH.
    beside = os.path.join(os.path.dirname(sys.executable), "litert-benchmark")
    tool = beside if os.path.exists(beside) else shutil.which("litert-benchmark")
    if tool is None:
        raise FileNotFoundError("litert-benchmark is not on PATH (it comes with ai-edge-litert).")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        subprocess.run(
            [
                tool,
                "--model",
                path,
                "--num_runs",
                str(FLAGS.runs),
                "--warmup_runs",
                str(FLAGS.warmup),
                "--num_threads",
                str(threads),
                "--result_json",
                out,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        with open(out, encoding="utf-8") as f:
            return float(json.load(f)["latency"]["median_ms"])


def main(argv):
    del argv
    common.apply_smoke(SMOKE)
    with tempfile.TemporaryDirectory() as out:
        paths = _export_models(out)
        rows = []
        for label, path in paths.items():
            for threads in map(int, FLAGS.threads):
                m = benchmark.measure(path, threads=threads, warmup=FLAGS.warmup, runs=FLAGS.runs)
                rows.append(
                    {
                        "model": label,
                        "threads": threads,
                        "size_bytes": m.size_bytes,
                        "macs": m.cost.macs,
                        "params": m.cost.params,
                        "p50_ms": m.latency.p50_ms,
                        "p90_ms": m.latency.p90_ms,
                        "litert_benchmark_p50_ms": _litert_benchmark_median(path, threads),
                    }
                )
    by = {(r["model"], r["threads"]): r for r in rows}
    teacher, student_f, student_q = paths_labels = list(paths)
    speedups = []
    for threads in map(int, FLAGS.threads):
        t, f, q = (by[(k, threads)]["p50_ms"] for k in paths_labels)
        speedups.append((threads, t / q, f / q))
    common.write_json(
        "latency",
        {"rows": rows, "machine": common.machine(), "warmup": FLAGS.warmup, "runs": FLAGS.runs},
    )
    table = "\n".join(
        f"| {r['model']} | {r['threads']} | {r['size_bytes'] / 1024:.0f} | {r['macs'] / 1e6:.1f} | "
        f"{r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['litert_benchmark_p50_ms']:.3f} | "
        f"{100 * (r['p50_ms'] / r['litert_benchmark_p50_ms'] - 1):+.1f}% |"
        for r in rows
    )
    ratio_lines = "\n".join(
        f"- {threads} thread(s): int8 student is {tq:.1f}x faster than the float32 teacher "
        f"(target >= 10x: {'met' if tq >= 10 else 'not met'}) and {fq:.2f}x faster than its "
        f"float32 self (target >= 1.5x: {'met' if fq >= 1.5 else 'not met'})."
        for threads, tq, fq in speedups
    )
    worst = max(abs(r["p50_ms"] / r["litert_benchmark_p50_ms"] - 1) for r in rows)
    common.write_section(
        "latency",
        f"""
## Host latency (`benchmarks/latency.py`)

{common.machine()}. Untrained {FLAGS.teacher} (teacher) and {FLAGS.student} (student) for
32x32x3 inputs, batch 1, exported by tfkd (int8: full integer, float I/O, calibrated on random
images). tfkd: LiteRT interpreter with XNNPACK, {FLAGS.warmup} warm-up runs then {FLAGS.runs}
timed `invoke()` calls; litert-benchmark: the same file, thread count and run counts (CompiledModel
API, CPU accelerator; it reports medians rounded to 0.01 ms).

| model | threads | KiB | MMACs | tfkd p50 ms | tfkd p90 ms | litert-benchmark p50 ms | \
tfkd vs litert |
|---|---|---|---|---|---|---|---|
{table}

{ratio_lines}
- Largest disagreement between tfkd and litert-benchmark medians: {100 * worst:.1f}% (target
  within 10%: {"met" if worst <= 0.10 else "not met"}).
""",
    )
    print(table)


if __name__ == "__main__":
    app.run(main)
