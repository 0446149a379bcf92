"""A search's results: the Pareto front, the model recommended for the budget, the report.

Objectives are maximised (the task's quality: a classifier's accuracy, a detector's mAP) or
minimised (latency_ms, size_kb). A point dominates another when it is no worse in every objective
and better in one.
"""

import json
import os
import shutil
from collections.abc import Sequence

from tfkd import export, files

# The quality objectives, one per task, as the report names them (values in [0, 1], shown in %).
QUALITY_WORDS = {"accuracy": "accuracy", "map": "mAP@[.5:.95]"}
OBJECTIVES = {"accuracy": "max", "map": "max", "latency_ms": "min", "size_kb": "min"}


def check_objectives(names: Sequence[str], quality: str) -> tuple[str, ...]:
    """`names` when they are the run's `quality` objective and one or both costs, each once."""
    names = tuple(names)
    costs = [n for n in names if n not in QUALITY_WORDS]
    if (
        any(n not in OBJECTIVES for n in names)
        or len(set(names)) != len(names)
        or set(names) - set(costs) != {quality}
        or not costs
    ):
        raise ValueError(
            f"--objective={','.join(names)}: give {quality} (what this run's task is scored "
            f"by) and one or both of latency_ms, size_kb, each once."
        )
    return names


def quality_of(objectives: Sequence[str]) -> str:
    """The quality objective among `objectives` (`check_objectives` allows exactly one)."""
    return next(n for n in objectives if n in QUALITY_WORDS)


# Latencies closer than this (relative) count as equal: one file measured again on an idle
# 2-core host moved by up to 2% (a 1.5-microsecond digits model), so a smaller difference says
# nothing about which model is faster (epsilon-dominance, Laumanns et al. 2002).
LATENCY_TOLERANCE = 0.05


def _compare(name: str, a: float, b: float, latency_tolerance: float) -> int:
    """+1 when `a` is better than `b` in objective `name`, -1 when worse, 0 when equal."""
    if name == "latency_ms" and abs(a - b) <= latency_tolerance * max(a, b):
        return 0
    if a == b:
        return 0
    return 1 if (a > b) == (OBJECTIVES[name] == "max") else -1


def dominates(
    a: dict, b: dict, objectives: Sequence[str], latency_tolerance: float = LATENCY_TOLERANCE
) -> bool:
    """Whether point `a` is no worse than `b` in every objective and better in one (latencies
    within `latency_tolerance` of each other being equal)."""
    signs = [_compare(n, a[n], b[n], latency_tolerance) for n in objectives]
    return min(signs) >= 0 and max(signs) > 0


def front(
    points: Sequence[dict], objectives: Sequence[str], latency_tolerance: float = LATENCY_TOLERANCE
) -> list[dict]:
    """The points no other point dominates, fastest first."""
    kept = [
        p for p in points if not any(dominates(q, p, objectives, latency_tolerance) for q in points)
    ]
    return sorted(
        kept,
        key=lambda p: tuple(
            p[n] if OBJECTIVES[n] == "min" else -p[n] for n in reversed(objectives)
        ),
    )


def recommend(
    points: Sequence[dict],
    quality: str,
    latency_budget_ms: float | None,
    size_budget_kb: float | None,
) -> tuple[dict | None, str]:
    """The best point in `quality` within the budgets (the faster one on a tie), or, when none
    meets them, the fastest point; with the sentence saying which."""
    if not points:
        return None, "No trial finished: nothing to recommend."

    def fits(p):
        return (latency_budget_ms is None or p["latency_ms"] <= latency_budget_ms) and (
            size_budget_kb is None or p["size_kb"] <= size_budget_kb
        )

    fitting = [p for p in points if fits(p)]
    budget = _budget_text(latency_budget_ms, size_budget_kb)
    if fitting:
        best = max(fitting, key=lambda p: (p[quality], -p["latency_ms"]))
        return best, f"The model of highest {QUALITY_WORDS[quality]} {budget}: {best['name']}."
    fastest = min(points, key=lambda p: (p["latency_ms"], -p[quality]))
    return fastest, (
        f"No model met the budget ({budget.removeprefix('within ')}); the fastest "
        f"is recommended instead: {fastest['name']}."
    )


def _budget_text(latency_budget_ms, size_budget_kb) -> str:
    parts = [
        f"{latency_budget_ms:g} ms" if latency_budget_ms is not None else "",
        f"{size_budget_kb:g} KiB" if size_budget_kb is not None else "",
    ]
    parts = [p for p in parts if p]
    return "within " + " and ".join(parts) if parts else "found (no budget given)"


def plot(
    points: Sequence[dict],
    front_points: Sequence[dict],
    references: Sequence[dict],
    path: str,
    title: str,
    quality: str,
) -> None:
    """`quality` against latency; marker area ~ file size; the front joined and highlighted;
    the base recipe's models as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    largest = max(p["size_kb"] for p in list(points) + list(references))
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    on_front = {p["name"] for p in front_points}
    for p in points:
        highlighted = p["name"] in on_front
        axes.scatter(
            p["latency_ms"],
            100 * p[quality],
            s=30 + 500 * p["size_kb"] / largest,
            color="tab:orange" if highlighted else "tab:gray",
            alpha=0.8 if highlighted else 0.35,
            edgecolors="black" if highlighted else "none",
        )
        axes.annotate(
            p["name"],
            (p["latency_ms"], 100 * p[quality]),
            fontsize=7,
            textcoords="offset points",
            xytext=(5, 4),
        )
    line = sorted(front_points, key=lambda p: p["latency_ms"])
    axes.step(
        [p["latency_ms"] for p in line],
        [100 * p[quality] for p in line],
        where="post",
        color="tab:orange",
        label="Pareto front (search)",
    )
    for r in references:
        axes.scatter(r["latency_ms"], 100 * r[quality], marker="x", color="tab:blue", s=50)
        axes.annotate(
            r["name"],
            (r["latency_ms"], 100 * r[quality]),
            fontsize=7,
            color="tab:blue",
            textcoords="offset points",
            xytext=(5, -10),
        )
    if references:
        axes.scatter([], [], marker="x", color="tab:blue", label="base recipe")
    axes.set_xscale("log")
    axes.set_xlabel("p50 latency, ms (log scale)")
    axes.set_ylabel(f"test {QUALITY_WORDS[quality]} of the .tflite, %")
    axes.set_title(f"{title} (marker area ~ file size)", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    with files.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def _row(p: dict, quality: str) -> str:
    cells = [
        p["name"],
        f"{100 * p[quality]:.2f}",
        f"{p['latency_ms']:.4g}",
        f"{p['size_kb']:.1f}",
    ]
    params = _settings(p.get("params", {}))
    return "| " + " | ".join(cells + [params or "(base flags)"]) + " |"


def _settings(params: dict) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())
    )


def _header(quality: str) -> str:
    return (
        f"| model | {QUALITY_WORDS[quality]}, % | p50 latency, ms | size, KiB | settings |\n"
        "|---|---:|---:|---:|---|"
    )


def markdown(summary: dict) -> str:
    quality = quality_of(summary["objectives"])
    lines = [
        f"# Search: {summary['dataset']}",
        "",
        f"{summary['finished']} of {summary['trials']} trial(s) finished, "
        f"{len(summary['failed'])} failed; {summary['seconds'] / 60:.1f} min on "
        f"{summary['measured_on']}. Objectives: "
        + ", ".join(f"{n} ({OBJECTIVES[n]})" for n in summary["objectives"])
        + ".",
        "",
        "Latencies are measured again after the search, one model at a time, three times "
        "each (the median is shown; trials measured theirs while others trained). "
        f"Repeats of one file differed by up to {100 * summary['latency_spread']:.1f}%; "
        f"latencies within {100 * summary['latency_tolerance']:.0f}% count as equal in "
        "the front.",
        "",
        "## Recommended",
        "",
        summary["recommendation"],
    ]
    if summary["recommended"]:
        lines += [
            "",
            f"Files: `{summary['recommended_dir']}` (the .tflite with its metadata, "
            "labels.txt, model_card.json). Rerun it alone: `python -m pipelines.distill "
            f"--flagfile={summary['recommended']['flagfile']}`.",
        ]
    lines += ["", "## Pareto front", "", _header(quality)]
    lines += [_row(p, quality) for p in summary["front"]]
    lines += ["", "![Pareto front](pareto.png)", "", "## Against the base recipe", ""]
    for comparison in summary["base_comparison"]:
        lines.append(f"- {comparison}")
    lines += ["", "## Every trial", "", _header(quality)]
    lines += [_row(p, quality) for p in summary["points"]]
    if summary["failed"]:
        lines += ["", "## Failed trials", ""]
        lines += [
            f"- {f['name']} ({_settings(f['params'])}): {f['error']}" for f in summary["failed"]
        ]
    lines += [
        "",
        "Each trial's flags are in `trials/<name>.flags` (rerun one alone with "
        "`python -m pipelines.distill --flagfile=...`); its run directory is "
        "`trials/<name>/`, its output `trials/<name>.log`.",
    ]
    return "\n".join(lines) + "\n"


def against(
    front_points: Sequence[dict],
    reference: dict,
    objectives: Sequence[str],
    latency_tolerance: float = LATENCY_TOLERANCE,
) -> dict:
    """The front models that dominate `reference`, and those that equal it in every objective
    (latencies within the tolerance): whether the search beat a given model."""
    dominating = [
        p["name"] for p in front_points if dominates(p, reference, objectives, latency_tolerance)
    ]
    equal = [
        p["name"]
        for p in front_points
        if all(_compare(n, p[n], reference[n], latency_tolerance) == 0 for n in objectives)
    ]
    return {"dominating": dominating, "equal": equal, "met": bool(dominating or equal)}


def compare_with_base(
    front_points: Sequence[dict],
    references: Sequence[dict],
    objectives: Sequence[str],
    latency_tolerance: float = LATENCY_TOLERANCE,
) -> list[str]:
    """For each model of the base recipe, a sentence: the front models that dominate or
    equal it."""
    lines, quality = [], quality_of(objectives)
    for r in references:
        found = against(front_points, r, objectives, latency_tolerance)
        what = (
            f"dominated by {', '.join(found['dominating'])}"
            if found["dominating"]
            else f"equalled by {', '.join(found['equal'])}"
            if found["equal"]
            else "not dominated by any trial"
        )
        lines.append(
            f"{r['name']} ({100 * r[quality]:.2f}% {QUALITY_WORDS[quality]}, "
            f"{r['latency_ms']:.4g} ms, {r['size_kb']:.1f} KiB): {what}."
        )
    return lines


def write(search_dir: str, summary: dict) -> None:
    """report.json, report.md and pareto.png into `search_dir`."""
    if summary["points"]:
        plot(
            summary["points"],
            summary["front"],
            summary["base"],
            os.path.join(search_dir, "pareto.png"),
            f"{summary['dataset']}: search",
            quality_of(summary["objectives"]),
        )
    files.write_text(
        os.path.join(search_dir, "report.json"), json.dumps(summary, indent=2, sort_keys=True)
    )
    files.write_text(os.path.join(search_dir, "report.md"), markdown(summary))


def export_recommended(point: dict, directory: str) -> None:
    """The recommended model's .tflite (metadata inside), labels and model card, together."""
    tflite_dir = os.path.dirname(point["file"])
    os.makedirs(directory, exist_ok=True)
    for source in (
        point["file"],
        os.path.join(tflite_dir, export.LABELS_FILE),
        os.path.join(tflite_dir, export.CARD_FILE),
    ):
        with files.atomic_path(os.path.join(directory, os.path.basename(source))) as tmp:
            shutil.copyfile(source, tmp)
