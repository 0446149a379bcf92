"""A search's Pareto front, recommendation and report, against independent computations."""

import json
import os

import numpy as np
import pytest

from pipelines.search import report as search_report


def _points(rng, count):
    # Rounded so that ties (equal objectives) occur and are handled.
    return [
        {
            "name": f"t{i}",
            "accuracy": float(np.round(rng.uniform(0.5, 1.0), 2)),
            "latency_ms": float(np.round(rng.uniform(0.1, 2.0), 1)),
            "size_kb": float(np.round(rng.uniform(10, 100), -1)),
            "params": {"i": i},
        }
        for i in range(count)
    ]


def _front_by_matrix(points, objectives):
    """Non-dominated rows of the objective matrix (all turned into 'larger is better')."""
    signs = np.array([1.0 if search_report.OBJECTIVES[o] == "max" else -1.0 for o in objectives])
    values = np.array([[p[o] for o in objectives] for p in points]) * signs
    no_worse = (values[:, None, :] >= values[None, :, :]).all(-1)
    better = (values[:, None, :] > values[None, :, :]).any(-1)
    dominated = (no_worse & better).any(0)  # [i, j]: i dominates j
    return {points[j]["name"] for j in range(len(points)) if not dominated[j]}


@pytest.mark.parametrize(
    "objectives",
    [("accuracy", "latency_ms"), ("accuracy", "latency_ms", "size_kb"), ("accuracy", "size_kb")],
)
@pytest.mark.parametrize("seed", range(5))
def test_front_matches_a_vectorised_dominance_check(objectives, seed):
    points = _points(np.random.default_rng(seed), 25)
    front = search_report.front(points, objectives, latency_tolerance=0.0)
    assert {p["name"] for p in front} == _front_by_matrix(points, objectives)


def test_latencies_within_the_tolerance_count_as_equal():
    a = {"accuracy": 0.97, "latency_ms": 1.52}
    b = {"accuracy": 0.95, "latency_ms": 1.49}  # 2% faster: within measurement noise
    assert search_report.dominates(a, b, ["accuracy", "latency_ms"])
    assert not search_report.dominates(a, b, ["accuracy", "latency_ms"], latency_tolerance=0.0)
    c = {"accuracy": 0.95, "latency_ms": 1.30}  # 15% faster: a real difference
    assert not search_report.dominates(a, c, ["accuracy", "latency_ms"])
    assert {
        p["latency_ms"] for p in search_report.front([a, b, c], ["accuracy", "latency_ms"])
    } == {1.52, 1.30}


def test_dominance_needs_one_strictly_better_objective():
    a = {"accuracy": 0.9, "latency_ms": 1.0}
    assert not search_report.dominates(a, dict(a), ["accuracy", "latency_ms"])
    assert search_report.dominates(
        a, {"accuracy": 0.9, "latency_ms": 1.5}, ["accuracy", "latency_ms"]
    )
    assert not search_report.dominates(
        a, {"accuracy": 0.95, "latency_ms": 1.5}, ["accuracy", "latency_ms"]
    )


def test_recommendation_is_the_most_accurate_within_the_budget_else_the_fastest():
    points = [
        {"name": "slow", "accuracy": 0.95, "latency_ms": 3.0, "size_kb": 90},
        {"name": "mid", "accuracy": 0.90, "latency_ms": 1.0, "size_kb": 40},
        {"name": "fast", "accuracy": 0.80, "latency_ms": 0.5, "size_kb": 20},
    ]
    best, sentence = search_report.recommend(points, "accuracy", 1.5, None)
    assert best["name"] == "mid" and "within 1.5 ms" in sentence
    best, _ = search_report.recommend(points, "accuracy", None, 30)
    assert best["name"] == "fast"
    best, _ = search_report.recommend(points, "accuracy", None, None)
    assert best["name"] == "slow"
    best, sentence = search_report.recommend(points, "accuracy", 0.1, None)
    assert best["name"] == "fast" and sentence.startswith("No model met the budget (0.1 ms)")
    assert search_report.recommend([], "accuracy", 1.0, None)[0] is None
    # A detection search ranks by mAP: the same points, scored otherwise.
    detectors = [dict(p, map=1 - p["accuracy"]) for p in points]
    for p in detectors:
        del p["accuracy"]
    best, sentence = search_report.recommend(detectors, "map", 3.0, None)
    assert best["name"] == "fast" and "highest mAP@[.5:.95] within 3 ms" in sentence


def test_comparison_with_the_base_recipe_names_who_dominates():
    front = [{"name": "a", "accuracy": 0.96, "latency_ms": 1.0, "size_kb": 10}]
    base = [
        {"name": "base int8", "accuracy": 0.95, "latency_ms": 1.0, "size_kb": 10},
        {"name": "base float", "accuracy": 0.97, "latency_ms": 2.0, "size_kb": 40},
    ]
    lines = search_report.compare_with_base(front, base, ["accuracy", "latency_ms"])
    assert lines[0].endswith("dominated by a.")
    assert lines[1].endswith("not dominated by any trial.")


@pytest.mark.parametrize(
    "names, quality",
    [
        (["accuracy"], "accuracy"),
        (["latency_ms", "size_kb"], "accuracy"),
        (["accuracy", "accuracy"], "accuracy"),
        (["accuracy", "flops"], "accuracy"),
        (["accuracy", "latency_ms"], "map"),
        (["map", "accuracy", "latency_ms"], "map"),
    ],
)
def test_bad_objectives_are_refused(names, quality):
    with pytest.raises(ValueError, match=f"--objective=.*give {quality} "):
        search_report.check_objectives(names, quality)
    assert search_report.check_objectives([quality, "size_kb"], quality) == (quality, "size_kb")


@pytest.mark.parametrize("quality, words", [("accuracy", "accuracy"), ("map", "mAP@[.5:.95]")])
def test_report_files_are_written(tmp_path, quality, words):
    points = [
        {quality if k == "accuracy" else k: v for k, v in p.items()}
        for p in _points(np.random.default_rng(0), 6)
    ]
    front = search_report.front(points, [quality, "latency_ms"])
    summary = {
        "latency_spread": 0.02,
        "latency_tolerance": 0.05,
        "dataset": "digits",
        "objectives": [quality, "latency_ms"],
        "trials": 7,
        "finished": 6,
        "failed": [
            {
                "name": "x",
                "params": {"learning_rate": 1e30},
                "error": "TrialFailed: non-finite loss",
            }
        ],
        "points": points,
        "front": front,
        "base": [dict(points[0], name="base int8")],
        "recommended": None,
        "recommendation": "No trial finished.",
        "recommended_dir": "recommended/",
        "seconds": 60.0,
        "measured_on": "a CPU",
        "base_comparison": ["base int8: not dominated by any trial."],
    }
    search_report.write(str(tmp_path), summary)
    text = (tmp_path / "report.md").read_text()
    assert "## Pareto front" in text and "learning_rate=1e+30" in text
    assert "differed by up to 2.0%" in text
    assert text.count("| t") == len(front) + len(points)
    assert text.count(f"| model | {words}, % |") == 2 and f"{quality} (max)" in text
    assert json.loads((tmp_path / "report.json").read_text())["finished"] == 6
    assert os.path.getsize(tmp_path / "pareto.png") > 1000


def test_against_names_the_front_models_that_beat_or_equal_a_reference():
    shipped = {"name": "base", "accuracy": 0.95, "latency_ms": 1.50, "size_kb": 21.6}
    objectives = ["accuracy", "latency_ms"]
    front = [
        dict(shipped, name="a", accuracy=0.96, latency_ms=1.52),  # within 5%: dominates
        dict(shipped, name="b", accuracy=0.99, latency_ms=4.0),
    ]
    assert search_report.against(front, shipped, objectives) == {
        "dominating": ["a"],
        "equal": [],
        "met": True,
    }
    assert search_report.against([dict(shipped, name="c", latency_ms=1.51)], shipped, objectives)[
        "equal"
    ] == ["c"]
    assert not search_report.against(
        [dict(shipped, name="d", accuracy=0.9, latency_ms=1.0)], shipped, objectives
    )["met"]


def test_each_trial_that_ends_is_one_line_with_the_searchs_eta():
    import io
    import types

    from pipelines.search.trial_lines import TrialLines

    clock = types.SimpleNamespace(now=0.0)
    stream = io.StringIO()
    lines = TrialLines(4, lambda name: f"SEARCH/trials/{name}", stream, clock=lambda: clock.now)
    lines.setup()
    done = types.SimpleNamespace(
        trial_id="a1",
        status="TERMINATED",
        config={"student": "cnn_tiny", "temperature": 2.0},
        last_result={"accuracy": 0.93121, "latency_ms": 0.5123, "other": 1},
    )
    running = types.SimpleNamespace(trial_id="b2", status="RUNNING", config={}, last_result={})
    clock.now = 60.0
    lines.on_trial_complete(1, [done, running], done)
    running.status = "ERROR"
    clock.now = 180.0
    lines.on_trial_error(2, [done, running], running)
    first, second = stream.getvalue().splitlines()
    # One trial in 60 s, three left: 3:00; then two in 180 s, two left: 3:00.
    assert first == (
        "  trial 1/4 a1: accuracy 0.9312, latency_ms 0.5123 "
        "(student=cnn_tiny, temperature=2.0)  ETA 03:00"
    )
    assert second == "  trial 2/4 b2: failed (see SEARCH/trials/b2.log)  ETA 03:00"
