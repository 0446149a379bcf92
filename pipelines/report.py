"""The run report: `report.json` (one entry per model, Keras and `.tflite`), `report.md` with its
headline, `pareto.png`, and what a run prints at its end."""

import dataclasses
import json
import os
from collections.abc import Sequence

import tfkd
from pipelines.run import MANIFEST, RunLayout
from tfkd import files, quantize
from tfkd.keras import keras

FORMATS = ("keras", "tflite")
QUANTIZATIONS = (None, "float16", "dynamic", "int8")


def model_entry(
    name: str,
    format: str,
    quantization: str | None,
    accuracy: float,
    params: int | None,
    size_bytes: int | None,
    latency: dict | None = None,
    threads: int | None = None,
    **extra,
) -> dict:
    """One `models` entry of report.json; `latency` is a `LatencyStats.to_dict()` or None."""
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}. Received: {format!r}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be one of {QUANTIZATIONS}. Received: {quantization!r}"
        )
    latency_ms = (
        None
        if latency is None
        else {key: latency[f"{key}_ms"] for key in ("mean", "p50", "p90", "p99")}
    )
    return {
        "name": name,
        "format": format,
        "quantization": quantization,
        "accuracy": accuracy,
        "params": params,
        "size_bytes": size_bytes,
        "latency_ms": latency_ms,
        "threads": threads,
        **extra,
    }


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.2f} points"


def _quantization_label(entry: dict) -> str:
    if entry.get("quantization_aware"):
        # Fine-tuned with the teacher (QAD), or on labels alone when the baseline was shipped.
        method = "QAT" if entry.get("fine_tuned_from") == "baseline" else "QAD"
        return f"int8 ({method})" if entry["format"] == "tflite" else f"fake-quant ({method})"
    return entry["quantization"] or "float"


def _gain_noise(test: dict | None) -> str:
    """The paired test behind a gain, and whether the gain is beyond its noise."""
    if not test:
        return ""
    return (
        f" ± {100 * test['standard_error']:.2f} (paired standard error over the "
        f"{test['images']} test images; {_interval(test)}; McNemar "
        f"p={test['p_value']:.2g}: {test['verdict']})"
    )


def _interval(test: dict) -> str:
    low, high = (100 * v for v in test["interval"])
    return f"95% interval {low:+.2f} to {high:+.2f}"


def markdown(report: dict) -> str:
    """A readable report: headline, findings, then one table row per model."""
    lines = [f"# tfkd report: {report['dataset']}", ""]
    lines += [f"- {line}" for line in report.get("headline", [])]
    summary = report.get("summary", {})
    lines += [
        "",
        f"- Distillation gain over the student trained alone: "
        f"{_points(summary.get('kd_gain'))}" + _gain_noise(summary.get("kd_gain_test")),
        f"- QAD int8 over PTQ int8 of the shipped student: "
        f"{_points(summary.get('qad_gain_over_ptq'))}",
    ]
    parity = summary.get("parity")
    if parity:
        failures = parity.get("failures") or {}
        verdict = (
            "passed"
            if not failures
            else "FAILED for " + ", ".join(f"{k} ({v:+.2f})" for k, v in failures.items())
        )
        lines.append(
            f"- Parity gate (max drop {parity['max_drop_points']:.2f} points against "
            f"the float Keras student): {verdict}"
        )
    where = summary.get("measured_on")
    if where:
        lines.append(f"- Latency measured on: {where}")
    lines += [
        "",
        "| model | format | quantization | accuracy % | params | size KiB | p50 ms | "
        "p90 ms | threads |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
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
            f"{cell(m['threads'], 'd')} |"
        )
    if os.path.exists(report.get("pareto_png") or ""):
        lines += ["", f"![accuracy vs latency]({os.path.basename(report['pareto_png'])})"]
    return "\n".join(lines) + "\n"


def pareto_plot(report: dict, path: str) -> None:
    """Accuracy (or the report's `metric`, stored in each model's `accuracy`) vs p50 latency of
    every model with a latency; marker area ~ file size."""
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
        axes.scatter(
            x,
            y,
            s=30 + 600 * m["size_bytes"] / largest,
            alpha=0.55,
            label=f"{number}: {m['name']} ({m['size_bytes'] / 1024:.0f} KiB)",
        )
        axes.annotate(
            str(number),
            (x, y),
            fontsize=8,
            textcoords="offset points",
            xytext=(5, 5 if number % 2 else -11),
        )
    axes.legend(
        fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), markerscale=0.4, frameon=False
    )
    axes.set_xscale("log")
    axes.set_xlabel(f"p50 latency, ms (log scale; {points[0]['threads']} thread(s))")
    # A detection report scores mAP (pipelines/detection/report.py), a classification one accuracy.
    metric = report.get("metric", "accuracy")
    axes.set_ylabel(f"test {metric}, %")
    axes.set_title(
        f"{report['dataset']}: {metric} vs latency (marker area ~ file size)", fontsize=9
    )
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    with files.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def write(
    run_dir: str, dataset: str, models: Sequence[dict], summary: dict, headline: Sequence[str] = ()
) -> dict:
    """Writes report.json, pareto.png (when latencies exist) and report.md into `run_dir`."""
    report = {
        "dataset": dataset,
        "models": list(models),
        "summary": summary,
        "headline": list(headline),
        "pareto_png": None,
    }
    if any(m["latency_ms"] for m in models):
        png = os.path.join(run_dir, RunLayout.PARETO_PNG)
        report["pareto_png"] = png
        pareto_plot(report, png)
    files.write_text(
        os.path.join(run_dir, RunLayout.REPORT_JSON), json.dumps(report, indent=2, sort_keys=True)
    )
    files.write_text(os.path.join(run_dir, RunLayout.REPORT_MD), markdown(report))
    return report


@dataclasses.dataclass(frozen=True)
class KerasModel:
    """A model a training stage kept, with that stage's metrics."""

    name: str
    model: keras.Model
    size_bytes: int
    metrics: dict


def measured_on() -> str:
    return f"this host's CPU ({os.cpu_count()} cores), LiteRT interpreter with XNNPACK"


def summarize(
    accuracy: dict,
    verify: dict,
    selection: dict,
    teacher_check: dict | None,
    test_images: int,
    max_drop_points: float,
    measured: bool,
    kd_gain_test: dict | None = None,
    alpha: float = 0.05,
) -> dict:
    """The findings of a run from the accuracies of its models (by name); `kd_gain_test` is
    `tfkd.measure.stats.paired_difference(distilled, alone)` on the test images."""
    summary = {
        "kd_gain": (
            accuracy["student"] - accuracy["baseline"]
            if {"student", "baseline"} <= set(accuracy)
            else None
        ),
        "qad_gain_over_ptq": (
            accuracy["student_qad_int8"] - accuracy["student_int8"]
            if {"student_qad_int8", "student_int8"} <= set(accuracy)
            else None
        ),
        "parity": {
            "max_drop_points": max_drop_points,
            "drops": verify["drops"],
            "failures": {k: v for k, v in verify["drops"].items() if v > max_drop_points},
        },
        "measured_on": measured_on() if measured else None,
        "teacher_check": teacher_check,
        "selection": selection,
        "test_images": test_images,
        "kd_gain_standard_error": kd_gain_test["standard_error"] if kd_gain_test else None,
        "kd_gain_test": kd_gain_test
        and dict(
            kd_gain_test,
            verdict=("within noise" if kd_gain_test["p_value"] >= alpha else "beyond noise"),
            alpha=alpha,
        ),
    }
    if summary["kd_gain"] is not None:
        p = accuracy["student"]
        # Differences smaller than this are within what the test split can resolve.
        summary["standard_error"] = (p * (1 - p) / test_images) ** 0.5
    return summary


def headline(summary: dict, accuracy: dict, select_policy: str) -> list[str]:
    """The lines a person reads first: what was shipped and why, and the main comparison."""
    lines = []
    selection = summary["selection"]
    if selection["shipped"] == "baseline" and select_policy == "best":
        lines.append(
            f"Distillation did not help: {selection['reason']}; the student alone "
            "was quantized and exported instead (--select=best)."
        )
    else:
        shipped = "distilled student" if selection["shipped"] == "student" else "student alone"
        lines.append(f"Shipped the {shipped}: {selection['reason']}.")
    if summary.get("teacher_input"):
        lines.append(summary["teacher_input"]["message"])
    calibration = summary.get("calibration")
    if calibration:
        params = "".join(f", {k}={v:g}" for k, v in calibration["params"].items())
        cost = calibration["added_seconds"] / max(calibration["distillation_seconds"], 1e-9)
        lines.append(
            f"Distillation settings (--loss=auto): {calibration['loss']}"
            f"{params}, T={calibration['temperature']:g}, hard-label weight "
            f"{calibration['student_loss_weight']:g}, because "
            f"{calibration['reason']}; the race's losing probes added "
            f"{calibration['added_seconds']:.0f} s, {100 * cost:.0f}% of the "
            "chosen recipe's distillation time (the winner continued from its probe)."
        )
    keras3_student = summary.get("keras3_student") or {}
    if keras3_student.get("file"):
        lines.append(
            f"Keras 3 copy of the shipped float student: tflite/{keras3_student['file']} "
            "(keras.saving.load_model; takes the card's normalised inputs, emits "
            "logits)."
        )
    check = summary["teacher_check"]
    if check and not check["ok"]:
        lines.insert(0, f"WARNING: {check['message']}")
    if summary["kd_gain"] is not None:
        tested = summary["test_images"]
        teacher = f" vs teacher {100 * accuracy['teacher']:.2f}%" if "teacher" in accuracy else ""
        lines.append(
            f"Distilled student {100 * accuracy['student']:.2f}% vs student alone "
            f"{100 * accuracy['baseline']:.2f}%{teacher} on {tested} test images (one image = "
            f"{100 / tested:.2f} points; binomial standard "
            f"error of an accuracy here ±{100 * summary['standard_error']:.2f} points)."
        )
        test = summary.get("kd_gain_test")
        if test:
            lines.append(
                f"Distillation gain on test: {100 * test['difference']:+.2f} points "
                f"({_interval(test)}, McNemar p={test['p_value']:.2g}): "
                f"{test['verdict']}."
            )
    return lines


def build_and_write(
    run_dir: str,
    dataset: str,
    keras_models: Sequence[KerasModel],
    card: dict,
    verify: dict,
    host: dict | None,
    threads: int,
    selection: dict,
    teacher_check: dict | None,
    test_images: int,
    max_drop_points: float,
    select_policy: str,
    kd_gain_test: dict | None = None,
    alpha: float = 0.05,
) -> list[str]:
    """Writes the report of a run; returns the files written (relative to `run_dir`).

    `kd_gain_test`: the distillation gain's paired test over the test images
    (`tfkd.measure.stats.paired_difference`), judged at `alpha`."""
    fine_tuned_from = {k.name: k.metrics.get("from") for k in keras_models}
    models = [
        model_entry(
            k.name,
            "keras",
            None,
            k.metrics["accuracy"],
            k.model.count_params(),
            k.size_bytes,
            quantization_aware=quantize.is_quantization_aware(k.model),
            fine_tuned_from=k.metrics.get("from"),
        )
        for k in keras_models
    ]
    host = host or {}
    for name, entry in card["variants"].items():
        latency = host.get(name, {}).get(str(threads))
        models.append(
            model_entry(
                name,
                "tflite",
                entry["quantization"],
                verify["accuracy"][name],
                latency["cost"]["params"] if latency else None,
                entry["size_bytes"],
                latency["latency"] if latency else None,
                threads if latency else None,
                mode=entry["mode"],
                quantization_aware=entry["quantization_aware"],
                # Variants are named `<exported model>_<mode>`.
                fine_tuned_from=fine_tuned_from.get(name[: -len(entry["mode"]) - 1]),
            )
        )
    accuracy = {m["name"]: m["accuracy"] for m in models}
    summary = summarize(
        accuracy,
        verify,
        selection,
        teacher_check,
        test_images,
        max_drop_points,
        measured=bool(host),
        kd_gain_test=kd_gain_test,
        alpha=alpha,
    )
    # A teacher file's input convention, as found (or forced) before training.
    summary["teacher_input"] = next(
        (k.metrics.get("input") for k in keras_models if k.name == "teacher"), None
    )
    summary["keras3_student"] = card.get("keras3")
    student_metrics = next((k.metrics for k in keras_models if k.name == "student"), {})
    calibration = student_metrics.get("calibration")
    summary["calibration"] = calibration and dict(
        calibration,
        distillation_seconds=student_metrics["distillation_seconds"],
        added_seconds=tfkd.distill.calibration.Calibration.from_dict(calibration).added_seconds(),
    )
    written = write(run_dir, dataset, models, summary, headline(summary, accuracy, select_policy))
    return [RunLayout.REPORT_JSON, RunLayout.REPORT_MD] + (
        [RunLayout.PARETO_PNG] if written["pareto_png"] else []
    )


def terminal_summary(out_dir: str, failure: str | None) -> str:
    """What a run prints at its end: the report, the parity failure if any, and where it is."""
    lines = []
    report_md = os.path.join(os.path.abspath(out_dir), RunLayout.REPORT_MD)
    if os.path.exists(report_md):
        with open(report_md, encoding="utf-8") as f:
            lines.append(f.read())
    if failure:
        lines.append(f"Parity gate failed:\n{failure}")
    lines.append(
        f"Run directory: {os.path.abspath(out_dir)} ({RunLayout.REPORT_MD}, "
        f"{RunLayout.REPORT_JSON}, {RunLayout.PARETO_PNG}, {RunLayout.TFLITE}/, {MANIFEST})"
    )
    return "\n".join(lines)
