"""The run report: `report.json` (the contract in ARCHITECTURE.md), `report.md` and `pareto.png`."""

import json
import os
from typing import Optional, Sequence

from tfkd import files

FORMATS = ("keras", "tflite")
QUANTIZATIONS = (None, "float16", "dynamic", "int8")


def model_entry(name: str, format: str, quantization: Optional[str], accuracy: float,
                params: Optional[int], size_bytes: Optional[int],
                latency: Optional[dict] = None, threads: Optional[int] = None, **extra) -> dict:
    """One `models` entry of report.json; `latency` is a `LatencyStats.to_dict()` or None."""
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}. Received: {format!r}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"`quantization` must be one of {QUANTIZATIONS}. Received: "
                         f"{quantization!r}")
    latency_ms = None if latency is None else {
        key: latency[f"{key}_ms"] for key in ("mean", "p50", "p90", "p99")}
    return {"name": name, "format": format, "quantization": quantization, "accuracy": accuracy,
            "params": params, "size_bytes": size_bytes, "latency_ms": latency_ms,
            "threads": threads, **extra}


def _find(report: dict, name: str) -> Optional[dict]:
    return next((m for m in report["models"] if m["name"] == name), None)


def _points(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:+.2f} points"


def _quantization_label(entry: dict) -> str:
    if entry.get("quantization_aware"):
        # Fine-tuned with the teacher (QAD), or on labels alone when the baseline was shipped.
        method = "QAT" if entry.get("fine_tuned_from") == "baseline" else "QAD"
        return f"int8 ({method})" if entry["format"] == "tflite" else f"fake-quant ({method})"
    return entry["quantization"] or "float"


def markdown(report: dict) -> str:
    """A readable report: headline, findings, then one table row per model."""
    lines = [f"# tfkd report: {report['dataset']}", ""]
    lines += [f"- {line}" for line in report.get("headline", [])]
    summary = report.get("summary", {})
    lines += ["", f"- Distillation gain over the student trained alone: "
              f"{_points(summary.get('kd_gain'))}",
              f"- QAD int8 over PTQ int8 of the shipped student: "
              f"{_points(summary.get('qad_gain_over_ptq'))}"]
    parity = summary.get("parity")
    if parity:
        failures = parity.get("failures") or {}
        verdict = ("passed" if not failures else
                   "FAILED for " + ", ".join(f"{k} ({v:+.2f})" for k, v in failures.items()))
        lines.append(f"- Parity gate (max drop {parity['max_drop_points']:.2f} points against "
                     f"the float Keras student): {verdict}")
    where = summary.get("measured_on")
    if where:
        lines.append(f"- Latency measured on: {where}")
    lines += ["", "| model | format | quantization | accuracy % | params | size KiB | p50 ms | "
              "p90 ms | threads |", "|---|---|---|---|---|---|---|---|---|"]
    for m in report["models"]:
        latency = m["latency_ms"] or {}

        def cell(value, fmt):
            return "" if value is None else format(value, fmt)

        lines.append(
            f"| {m['name']} | {m['format']} | "
            f"{_quantization_label(m)} | "
            f"{cell(100 * m['accuracy'] if m['accuracy'] is not None else None, '.2f')} | "
            f"{cell(m['params'], ',d')} | "
            f"{cell(m['size_bytes'] / 1024 if m['size_bytes'] else None, '.1f')} | "
            f"{cell(latency.get('p50'), '.4g')} | {cell(latency.get('p90'), '.4g')} | "
            f"{cell(m['threads'], 'd')} |")
    if os.path.exists(report.get("pareto_png") or ""):
        lines += ["", f"![accuracy vs latency]({os.path.basename(report['pareto_png'])})"]
    return "\n".join(lines) + "\n"


def pareto_plot(report: dict, path: str) -> None:
    """Accuracy vs p50 latency of every model with a latency; marker area ~ file size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [m for m in report["models"] if m["latency_ms"] and m["accuracy"] is not None]
    if not points:
        raise ValueError("No model has both a latency and an accuracy: run the benchmark stage.")
    largest = max(m["size_bytes"] for m in points)
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=120)
    # Numbers on the points and names in the legend: variants of one student crowd together.
    for number, m in enumerate(points, 1):
        x, y = m["latency_ms"]["p50"], 100 * m["accuracy"]
        axes.scatter(x, y, s=30 + 600 * m["size_bytes"] / largest, alpha=0.55,
                     label=f"{number}: {m['name']} ({m['size_bytes'] / 1024:.0f} KiB)")
        axes.annotate(str(number), (x, y), fontsize=8, textcoords="offset points",
                      xytext=(5, 5 if number % 2 else -11))
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), markerscale=0.4,
                frameon=False)
    axes.set_xscale("log")
    axes.set_xlabel(f"p50 latency, ms (log scale; {points[0]['threads']} thread(s))")
    axes.set_ylabel("test accuracy, %")
    axes.set_title(f"{report['dataset']}: accuracy vs latency (marker area ~ file size)",
                   fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    with files.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def write(run_dir: str, dataset: str, models: Sequence[dict], summary: dict,
          headline: Sequence[str] = ()) -> dict:
    """Writes report.json, pareto.png (when latencies exist) and report.md into `run_dir`."""
    report = {"dataset": dataset, "models": list(models), "summary": summary,
              "headline": list(headline), "pareto_png": None}
    if any(m["latency_ms"] for m in models):
        report["pareto_png"] = os.path.join(run_dir, "pareto.png")
        pareto_plot(report, report["pareto_png"])
    files.write_text(os.path.join(run_dir, "report.json"),
                     json.dumps(report, indent=2, sort_keys=True))
    files.write_text(os.path.join(run_dir, "report.md"), markdown(report))
    return report
