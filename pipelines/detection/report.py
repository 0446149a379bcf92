"""The report of a detection run: report.json, report.md and pareto.png (mAP against latency),
in the classification report's layout (`pipelines.report`), with COCO mAP where it has
accuracy and every verdict with its paired interval."""

import json
import os

from pipelines import report as classification_report
from pipelines.run import RunLayout
from tfkd import files, quantize

METRIC = "mAP"


def _points(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def difference(comparison: dict) -> str:
    """A paired mAP difference (`metrics.paired_map_difference`) as every message states it."""
    low, high = comparison["interval"]
    return (
        f"{100 * comparison['difference']:+.1f} mAP points, 95% interval [{100 * low:+.1f}, "
        f"{100 * high:+.1f}] over {comparison['images']} images ({comparison['resamples']} "
        "bootstrap resamplings)"
    )


def build_and_write(
    run_dir: str,
    dataset: str,
    keras_models: dict,
    card: dict,
    verify: dict,
    host: dict | None,
    threads: int,
    selection: dict,
    gain: dict | None,
    sizes: dict,
    max_drop_points: float,
) -> list[str]:
    """Writes the report; returns the files written (relative to `run_dir`).

    `keras_models`: name -> (model, file size, stage metrics); `gain`: the distilled student
    minus the student alone on the test images (`metrics.paired_map_difference`)."""
    models = [
        classification_report.model_entry(
            name,
            "keras",
            None,
            stage_metrics["map"],
            model.count_params(),
            size,
            map50=stage_metrics["map50"],
            quantization_aware=quantize.is_quantization_aware(model),
            fine_tuned_from=stage_metrics.get("from"),
        )
        for name, (model, size, stage_metrics) in keras_models.items()
    ]
    host = host or {}
    for name, entry in card["variants"].items():
        latency = host.get(name, {}).get(str(threads))
        models.append(
            classification_report.model_entry(
                name,
                "tflite",
                entry["quantization"],
                verify["scores"][name]["map"],
                latency["cost"]["params"] if latency else None,
                entry["size_bytes"],
                latency["latency"] if latency else None,
                threads if latency else None,
                map50=verify["scores"][name]["map50"],
                mode=entry["mode"],
                quantization_aware=entry["quantization_aware"],
            )
        )
    teacher_check = keras_models.get("student", (None, None, {}))[2].get("teacher_check")
    summary = {
        "task": "object detection",
        "images": sizes,
        "shipped": selection["shipped"],
        "selection": selection,
        "teacher_check": teacher_check,
        "kd_gain_test": gain,
        "parity": {
            "max_drop_points": max_drop_points,
            "drops": verify["drops"],
            "failure": verify["failure"],
        },
    }
    report = {
        "dataset": dataset,
        "metric": METRIC,
        "models": models,
        "summary": summary,
        "headline": _headline(summary, models),
        "pareto_png": None,
    }
    if any(m["latency_ms"] for m in models):
        png = os.path.join(run_dir, RunLayout.PARETO_PNG)
        report["pareto_png"] = png
        classification_report.pareto_plot(report, png)
    files.write_text(
        os.path.join(run_dir, RunLayout.REPORT_JSON), json.dumps(report, indent=2, sort_keys=True)
    )
    files.write_text(os.path.join(run_dir, RunLayout.REPORT_MD), markdown(report))
    return [RunLayout.REPORT_JSON, RunLayout.REPORT_MD] + (
        [RunLayout.PARETO_PNG] if report["pareto_png"] else []
    )


def _headline(summary: dict, models: list[dict]) -> list[str]:
    by_name = {m["name"]: m for m in models}
    lines = []
    gain = summary["kd_gain_test"]
    if gain:
        lines.append(
            "Distillation against the student alone, test mAP: "
            f"{difference(gain)}: {gain['verdict']}."
        )
    shipped_int8 = [
        m for m in models if m["format"] == "tflite" and m.get("mode") == "int8_io_uint8"
    ]
    for entry in shipped_int8:
        lines.append(
            f"{entry['name']}: mAP {_points(entry['accuracy'])} (mAP@.5 "
            f"{_points(entry['map50'])}), {entry['size_bytes'] / 1024:.0f} KiB"
            + (
                f", p50 {entry['latency_ms']['p50']:.2f} ms on this host"
                if entry["latency_ms"]
                else ""
            )
            + "."
        )
    shipped = by_name.get(summary["shipped"])
    if shipped:
        which = "distilled student" if summary["shipped"] == "student" else "student alone"
        lines.append(
            f"Shipped: the {which} (float Keras mAP {_points(shipped['accuracy'])}): "
            f"{summary['selection']['reason']}."
        )
    if summary["parity"]["failure"]:
        lines.append("Parity gate FAILED: " + summary["parity"]["failure"].splitlines()[0])
    return lines


def markdown(report: dict) -> str:
    summary = report["summary"]
    images = summary["images"]
    lines = [
        f"# tfkd report: object detection on {report['dataset']}",
        "",
        f"{images['train']} training, {images['validation']} validation and {images['test']} "
        f"test images. Latency: {classification_report.measured_on()}. mAP is COCO mAP@[.5:.95] "
        "(pycocotools) on the test images, in points.",
        "",
        *(f"- {line}" for line in report["headline"]),
        "",
        "| model | format | mode | mAP | mAP@.5 | size KiB | p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in report["models"]:
        latency = f"{m['latency_ms']['p50']:.3f}" if m["latency_ms"] else "-"
        size = f"{m['size_bytes'] / 1024:.0f}" if m["size_bytes"] else "-"
        lines.append(
            f"| {m['name']} | {m['format']} | {m.get('mode') or '-'} | {_points(m['accuracy'])} "
            f"| {_points(m['map50'])} | {size} | {latency} |"
        )
    check = summary["teacher_check"]
    if check:
        lines += ["", check["message"]]
    drops = summary["parity"]["drops"]
    lines += [
        "",
        f"Parity gate (at most {summary['parity']['max_drop_points']:g} mAP points below the "
        "float Keras student): "
        + ", ".join(f"{name} {drop:+.2f}" for name, drop in sorted(drops.items()))
        + (" — FAILED" if summary["parity"]["failure"] else " — passed"),
    ]
    if report.get("pareto_png"):
        lines += ["", f"![mAP vs latency]({os.path.basename(report['pareto_png'])})"]
    return "\n".join(lines) + "\n"
