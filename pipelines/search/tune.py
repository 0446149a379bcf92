"""The search over Ray Tune with Optuna's multi-objective sampler: the base run, the trials, and
the report after every finished trial's file is measured again, one at a time."""

import dataclasses
import logging as std_logging
import os
import re
import socket
import sys
import time
import typing

import numpy as np
from absl import logging

from pipelines import console, report
from pipelines.config import Config
from pipelines.search import report as search_report
from pipelines.search import space, tasks
from pipelines.search.trainable import ROOT, Layout, run_trial
from pipelines.search.trials import (
    EXPERIMENT,
    _read_json,
    objectives_of,
    run_pipeline,
    trial_overrides,
    write_flags,
)
from tfkd.measure import benchmark


def _check_address(address: str) -> None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--address={address}: no Ray cluster answers there ({error}). Start one with "
            "`ray start --head --port=PORT` on the head machine (and `ray start "
            "--address=HEAD:PORT` on each other machine), or drop --address to run on this "
            "machine alone."
        ) from error


def latency_floor(base: Config, parameters: list, inputs: np.ndarray | None) -> tuple[float, str]:
    """The lowest latency any point of the space can reach: the candidates' architectures at the
    smallest resolution, in each export mode (`tfkd.measure.benchmark.latency_floor`), fed
    `inputs` (`tasks.latency_inputs`)."""

    def choices(name, default):
        parameter = next((p for p in parameters if p.name == name), None)
        return list(parameter.ends()) if parameter else [default]

    sizes = choices("image_size", ",".join(map(str, base.image_size)))
    smallest = min(sizes, key=lambda s: _area(s))
    p50, which = benchmark.latency_floor(
        choices("student", base.student),
        choices("modes", base.modes[0]),
        tasks.floor_exporter(base, smallest),
        threads=base.threads[0],
        inputs=inputs,
    )
    return p50, f"{which} at {smallest or 'the native size'}"


def _area(size: str) -> int:
    values = [int(v) for v in str(size).split(",") if v]
    return values[0] * values[1] if values else 0


def _points(results, layout: Layout, quality: str) -> tuple[list, list]:
    """Finished trials as points scored by `quality`; failures."""
    points, failed = [], []
    for result in results:
        # Ray names a trial's directory run_trial_<id>_<number>_<point>.
        from_path = re.match(r"run_trial_([0-9a-f]+)_", os.path.basename(result.path or ""))
        trial = (result.metrics or {}).get("trial_id") or (from_path.group(1) if from_path else "?")
        point = {k.removeprefix("config/"): v for k, v in (result.config or {}).items()}
        if not point and os.path.exists(layout.point(trial)):
            point = _read_json(layout.point(trial))
        if result.error is not None or not result.metrics or quality not in result.metrics:
            failed.append({"name": trial, "params": point, "error": _error_text(result.error)})
            continue
        metrics = result.metrics
        points.append(
            {
                "name": trial,
                "params": point,
                quality: metrics[quality],
                "latency_ms": metrics["latency_ms"],
                "size_kb": metrics["size_kb"],
                "file": metrics["file"],
                "variant": metrics["variant"],
                "node": metrics.get("node"),
                "flagfile": layout.trial(trial) + ".flags",
            }
        )
    return points, failed


def _error_text(error) -> str:
    """The last line of a trial's error, without the exception's and the program's prefixes."""
    if error is None:
        return "no result"
    line = str(error).strip().splitlines()[-1]
    return re.sub(r"^([\w.]+: )?(error: )?", "", line)


REMEASURE_REPEATS = 3


def _remeasure(points: list, base: Config, inputs: np.ndarray | None) -> float:
    """Trials measured latency while others trained; the front compares quiet measurements:
    every file measured `REMEASURE_REPEATS` times, interleaved, their median kept. Returns the
    largest relative spread of one file's repeats."""
    if base.serial or not points:
        return 0.0  # measured on the phone, where the search does not share the CPU
    repeats: list[list[float]] = [[] for _ in points]
    for _ in range(REMEASURE_REPEATS):
        for point, measured in zip(points, repeats):
            latency = benchmark.measure(
                point["file"], threads=base.threads[0], runs=base.benchmark_runs, inputs=inputs
            ).latency
            measured.append(typing.cast(float, latency.p50_ms))  # None only without runs
    spread = 0.0
    for point, measured in zip(points, repeats):
        values = sorted(measured)
        point["latency_in_trial_ms"] = point["latency_ms"]
        point["latency_ms"] = values[len(values) // 2]
        spread = max(spread, (values[-1] - values[0]) / values[len(values) // 2])
    return spread


def _base_points(base: Config, layout: Layout) -> list:
    """The base recipe's shipped student files, as points to beat."""
    points = []
    for mode in base.modes:
        measured = objectives_of(layout.base, base, mode)
        points.append({"name": f"base {measured['variant']}", "params": {}, **measured})
    return points


def search(
    base: Config,
    parameters: list,
    trials: int,
    objectives: tuple,
    address: str | None,
    latency_budget_ms: float | None,
    size_budget_kb: float | None,
    trial_cpus: int = 1,
    trial_memory_gb: float = 2.0,
    quiet: bool = True,
) -> dict:
    """Runs (or resumes) the search and writes its report; returns the report's summary."""
    # Ray Tune's own progress tables stay off (verbose=0 below): the banners say what runs.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import optuna
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from pipelines.search.trial_lines import TrialLines

    layout = Layout(os.path.abspath(base.out_dir))
    overrides = trial_overrides(base, layout)
    # Everything is checked before anything is written or any trial starts.
    space.check(
        parameters,
        base,
        **dict(overrides, teacher=base.teacher, teacher_weights=base.teacher_weights),
    )
    if address:
        _check_address(address)
    # Read once: the floor's candidates and the shipped files measured again are fed the same.
    inputs = tasks.latency_inputs(base)
    floor = None
    if latency_budget_ms is not None:
        floor = latency_floor(base, parameters, inputs)
        if floor[0] > latency_budget_ms:
            print(
                f"warning: no candidate can meet --latency_budget_ms={latency_budget_ms:g}: "
                f"the fastest, {floor[1]}, takes {floor[0]:.4g} ms on this host. The search "
                "still runs and recommends its fastest model.",
                file=sys.stderr,
            )
    started = time.time()
    # "local": a Ray of this search's own, even when a cluster runs on this machine.
    try:
        ray.init(
            address=address or "local",
            include_dashboard=False,
            log_to_driver=False,
            logging_level=std_logging.ERROR,
            runtime_env={"env_vars": {"PYTHONPATH": ROOT}},
        )
    except (ConnectionError, ray.exceptions.RayError) as error:
        raise ValueError(
            f"--address={address}: cannot join the Ray cluster ({str(error).splitlines()[0]}). "
            "A cluster started with `ray start --head` checks a token: run the search with "
            "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, or ~/.ray/auth_token "
            "copied from the head)."
        ) from error
    except Exception as error:  # Ray raises a bare Exception when its own processes fail
        raise ValueError(
            f"Ray did not start on this machine ({str(error).splitlines()[0]}). "
            "Rerun; `ray stop --force` ends Ray processes another program left "
            "behind."
        ) from error
    if quiet:
        # Ray logs each failed trial's traceback; the report lists failures with their errors.
        for name in ("ray", "ray.tune"):
            std_logging.getLogger(name).setLevel(std_logging.CRITICAL)
    try:
        os.makedirs(layout.root, exist_ok=True)
        console.banner(
            1, 3, "base", f"the base recipe once, its teacher shared by every trial ({layout.base})"
        )
        base_run = dataclasses.replace(base, out_dir=layout.base, teacher_cache_dir="")
        cpus = os.cpu_count() or 1
        run_pipeline(base_run, layout.path("base.flags"), layout.path("base.log"), cpus)
        write_flags(base, layout.base_settings)
        console.banner(
            2,
            3,
            "trials",
            f"{trials} trial(s) on Ray "
            f"({int(ray.cluster_resources().get('CPU', 0))} CPU(s), "
            f"{len(ray.nodes())} node(s)); Optuna multi-objective TPE",
        )
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial,
                setup={"root": layout.root, "cpus": trial_cpus},
            ),
            {"cpu": trial_cpus, "memory": int(trial_memory_gb * 2**30)},
        )
        storage = layout.path("ray")
        experiment = os.path.join(storage, EXPERIMENT)
        if tune.Tuner.can_restore(experiment):
            logging.info("Resuming the search in %s.", experiment)
            tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True)
        else:
            sampler = optuna.samplers.TPESampler(
                seed=base.seed, n_startup_trials=max(2, min(10, trials // 3))
            )
            searcher = OptunaSearch(
                space={p.name: p.distribution() for p in parameters},
                metric=list(objectives),
                mode=[search_report.OBJECTIVES[o] for o in objectives],
                sampler=sampler,
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, num_samples=trials),
                run_config=tune.RunConfig(
                    name=EXPERIMENT,
                    storage_path=storage,
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=0),
                    callbacks=[TrialLines(trials, layout.trial)],
                ),
            )
        results = tuner.fit()
    finally:
        ray.shutdown()

    console.banner(3, 3, "report", "measuring every trial's file again, one at a time")
    quality = tasks.quality(base)
    points, failed = _points(results, layout, quality)
    references = _base_points(base, layout)
    spread = _remeasure(points + references, base, inputs)
    front_points = search_report.front(points, objectives)
    recommended, sentence = search_report.recommend(
        front_points, quality, latency_budget_ms, size_budget_kb
    )
    summary = {
        "dataset": base.dataset,
        "objectives": list(objectives),
        "trials": trials,
        "finished": len(points),
        "failed": failed,
        "points": points,
        "front": front_points,
        "base": references,
        "recommended": recommended,
        "recommendation": sentence,
        "recommended_dir": "recommended/",
        "latency_floor": floor,
        "base_comparison": search_report.compare_with_base(front_points, references, objectives),
        "seconds": time.time() - started,
        "measured_on": report.measured_on(),
        "latency_spread": spread,
        "latency_tolerance": search_report.LATENCY_TOLERANCE,
        "budget": {"latency_ms": latency_budget_ms, "size_kb": size_budget_kb},
    }
    if recommended:
        search_report.export_recommended(recommended, layout.path("recommended"))
    search_report.write(layout.root, summary)
    return summary
