r"""Find the best student for a latency budget: a multi-objective search over pipeline runs.

    python -m pipelines.search --flagfile=pipelines/configs/digits.flags \
        --space=pipelines/configs/digits.space --trials=12 --objective=accuracy,latency_ms \
        --out_dir=runs/search

1. Runs the base flags once as an ordinary run (`SEARCH/base/`): its teacher is then shared by
   every trial, and its shipped models are the points the search must beat.
2. Ray Tune runs `--trials` pipeline runs, each the base flags with one point of the space
   (`pipelines/space.py`), chosen by Optuna's multi-objective TPE sampler. A trial distils,
   runs QAD, exports one mode and measures that `.tflite` (accuracy through LiteRT, latency on
   this host, or on the phone of `--serial`). Trials share the teacher's logits
   (`SEARCH/teacher_cache/`, built by the first trial that needs them).
3. Measures every finished trial's file again, one at a time, and writes `SEARCH/report.md`:
   the Pareto front, the model recommended for the budget (copied to `SEARCH/recommended/`)
   and every trial's flags.

Ray starts on this machine unless `--address` names a running cluster (docs/search.md). A
killed search resumes from Ray Tune's experiment state when rerun with the same command.
"""

import dataclasses
import json
import logging as std_logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

# First: TensorFlow's native start-up lines go to the run log, not the terminal.
from pipelines import console  # noqa: F401  (isort: skip)
from absl import app, flags, logging

from pipelines import config as config_lib
from pipelines import report, search_report, space
from pipelines import run as run_lib
from pipelines import stages as stages_lib
from pipelines.config import Config
from tfkd import benchmark, export, files

FLAGS = flags.FLAGS
config_lib.define_flags()
flags.DEFINE_string("space", None, "The search space file (docs/search.md).")
flags.DEFINE_integer(
    "trials", 12, "Trials to run (finished trials count when resuming).", lower_bound=1
)
flags.DEFINE_list(
    "objective", ["accuracy", "latency_ms"], "accuracy and one or both of latency_ms, size_kb."
)
flags.DEFINE_float(
    "latency_budget_ms", None, "Recommend the most accurate model under this p50 latency."
)
flags.DEFINE_float(
    "size_budget_kb", None, "Recommend the most accurate model under this file size."
)
flags.DEFINE_string(
    "address",
    None,
    "HOST:PORT of a running Ray cluster (`ray start --head`); default: Ray on this machine.",
)
flags.DEFINE_integer(
    "trial_cpus", 1, "CPUs each trial asks Ray for (its TensorFlow threads).", lower_bound=1
)
flags.DEFINE_float(
    "trial_memory_gb",
    2.0,
    "Memory each trial asks Ray for: with the CPUs it "
    "bounds how many trials run at once on a machine.",
    lower_bound=0.1,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = "search"
# With the teacher cache off in the base flags the trials still share the teacher's logits,
# over this many augmented views when the base flags augment (one view otherwise).
SHARED_CACHE_VIEWS = 4


class TrialFailed(RuntimeError):
    """A trial's pipeline run ended with an error (its message is the run's last error line)."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a search writes, under --out_dir."""

    root: str

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def base(self) -> str:
        return self.path("base")

    def trial(self, name: str) -> str:
        return self.path("trials", name)

    def cache(self, config: Config) -> str:
        size = "x".join(map(str, config.image_size)) if config.image_size else "native"
        return self.path("teacher_cache", size)


def shared_teacher(base: Config, layout: Layout) -> str:
    """The teacher every trial uses: the base run's trained teacher, or the base flags' file."""
    if base.teacher_is_file:
        return os.path.abspath(base.teacher)
    return run_lib.RunLayout(layout.base).file(run_lib.RunLayout.model_files("teacher")[0])


def calibrated_settings(base: Config, layout: Layout) -> dict:
    """The distillation settings the base run's --loss=auto chose, as flags for trials (which
    have no student alone to calibrate against); nothing when the base named its loss."""
    if not base.calibrated:
        return {}
    chosen = _run_directory(layout.base, base).metrics("student")["calibration"]
    return dict(
        loss=chosen["loss"],
        loss_params=tuple(f"{k}={v}" for k, v in sorted(chosen["params"].items())),
        temperature=chosen["temperature"],
        student_loss_weight=chosen["student_loss_weight"],
    )


def trial_overrides(base: Config, layout: Layout) -> dict:
    """What every trial changes besides its point: the shared teacher and its logits, the
    stages a search needs (no student alone: the search compares trials), one thread count,
    and the base run's calibrated distillation settings where the point does not set them."""
    views = (
        base.teacher_cache_views
        if base.teacher_cache != "off"
        else (SHARED_CACHE_VIEWS if base.augmentation else 1)
    )
    return dict(
        teacher=shared_teacher(base, layout),
        teacher_weights="",
        teacher_cache="disk",
        teacher_cache_views=views,
        select="distilled",
        stages=tuple(s for s in stages_lib.selected(("all",), base.serial) if s != "baseline"),
        threads=base.threads[:1],
        overwrite=False,
    )


def teacher_input_size(layout: Layout) -> tuple[int, int]:
    """The shared teacher's input (height, width), from the base run's model card."""
    card = export.read_card(run_lib.RunLayout(layout.base).export_dir())
    shape = card["variants"]["teacher_float32"]["input"]["shape"]
    return int(shape[1]), int(shape[2])


def shipped_variant(card: dict, mode: str) -> str:
    """The card entry a trial ships in `mode`: its QAD student when there is one."""
    for name in (f"student_qad_{mode}", f"student_{mode}"):
        if name in card["variants"]:
            return name
    raise ValueError(f"No {mode} student in the model card: the export stage did not write it.")


def _run_directory(run_dir: str, config: Config) -> run_lib.RunDirectory:
    """A run's directory as the pipeline reads it (read-only here)."""
    return run_lib.RunDirectory(run_dir, config.results_settings(), writable=False)


def objectives_of(run_dir: str, config: Config, mode: str) -> dict:
    """The measured objectives of the `mode` file a run shipped."""
    tflite = run_lib.RunLayout(run_dir).export_dir()
    card = export.read_card(tflite)
    name = shipped_variant(card, mode)
    entry = card["variants"][name]
    drop = _run_directory(run_dir, config).metrics("verify")["drops"].get(name, 0.0)
    if drop > config.max_drop_points:
        raise TrialFailed(
            f"{name} lost {drop:.2f} accuracy points against its float student "
            f"(the parity gate allows --max_drop_points={config.max_drop_points:g})"
        )
    threads = str(config.threads[0])
    if config.serial:
        measured = _read_json(run_lib.RunLayout(run_dir).file(run_lib.RunLayout.DEVICE_BENCHMARK))[
            "variants"
        ]
    else:
        measured = _read_json(run_lib.RunLayout(run_dir).file(run_lib.RunLayout.HOST_BENCHMARK))
    latency = measured[name][threads]["latency"]
    # A phone's benchmark_model may report no median; its mean stands in.
    p50 = latency["p50_ms"] if latency["p50_ms"] is not None else latency["mean_ms"]
    return {
        "accuracy": entry["accuracy"]["value"],
        "latency_ms": p50,
        "size_kb": entry["size_bytes"] / 1024,
        "file": os.path.join(tflite, entry["file"]),
        "variant": name,
    }


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _unfinished(config: Config) -> list[str]:
    """The stages of `config` its run directory has not finished (a killed search's trials go
    on from there)."""
    directory = _run_directory(config.out_dir, config)
    return [s for s in stages_lib.selected(config.stages, config.serial) if not directory.done(s)]


def run_pipeline(config: Config, flagfile: str, log_path: str, cpus: int) -> None:
    """One pipeline run in its own process (a trial's memory and TensorFlow state end with it);
    its flags file reruns it alone. A run that finished earlier is not run again."""
    files.write_text(flagfile, "\n".join(config_lib.to_flags(config)) + "\n")
    unfinished = _unfinished(config)
    if not unfinished:
        return
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
        TF_NUM_INTRAOP_THREADS=str(cpus),
        TF_NUM_INTEROP_THREADS="1",
    )
    with open(log_path, "a", encoding="utf-8") as log:
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipelines.distill",
                f"--flagfile={flagfile}",
                f"--stages={','.join(unfinished)}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            check=False,
        ).returncode
    # Status 1: the parity gate failed for some file; the caller checks the one it ships.
    if status not in (0, 1):
        raise TrialFailed(_last_error(log_path) or f"exit status {status} (see {log_path})")


def _last_error(log_path: str) -> str | None:
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line[:40]]
    return (errors or lines or [None])[-1]


def trial_config(base: Config, point: dict, layout: Layout, name: str) -> Config:
    """The run of trial `name`: the base flags with its point, the shared teacher and logits."""
    settings = {k: v for k, v in calibrated_settings(base, layout).items() if k not in point}
    if "loss" in point:  # the point's own loss keeps the paper's parameters unless searched
        settings.pop("loss_params", None)
    config = space.trial_config(
        dataclasses.replace(base, **settings) if settings else base,
        point,
        out_dir=layout.trial(name),
        **trial_overrides(base, layout),
    )
    config = dataclasses.replace(config, teacher_cache_dir=layout.cache(config))
    if config.image_size:
        # The shared teacher keeps its own resolution whatever size the student searches.
        config = dataclasses.replace(config, teacher_image_size=teacher_input_size(layout))
    return config


def run_trial(point: dict, setup: dict) -> None:
    """A Ray Tune trial: the pipeline run of one point; reports its objectives."""
    import ray
    from ray import tune

    name = tune.get_context().get_trial_id()
    layout = Layout(setup["root"])
    config = trial_config(Config(**setup["base"]), point, layout, name)
    # Ray forgets the point of a trial that failed before a kill; the report reads it here.
    files.write_text(layout.trial(name) + ".point.json", json.dumps(point, sort_keys=True))
    run_pipeline(config, layout.trial(name) + ".flags", layout.trial(name) + ".log", setup["cpus"])
    mode = config.modes[0]
    measured = objectives_of(layout.trial(name), config, mode)
    measured["node"] = ray.get_runtime_context().get_node_id()
    tune.report(measured)


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


def latency_floor(base: Config, parameters: list) -> tuple[float, str]:
    """The lowest latency any point of the space can reach: the candidates' architectures at the
    smallest resolution, untrained (weights do not change latency), in each export mode."""
    import tfkd

    def choices(name, default):
        parameter = next((p for p in parameters if p.name == name), None)
        return list(parameter.ends()) if parameter else [default]

    sizes = choices("image_size", ",".join(map(str, base.image_size)))
    smallest = min(sizes, key=lambda s: _area(s))
    at_smallest = space.trial_config(base, {"image_size": smallest})
    splits = tfkd.data.load(
        base.dataset,
        data_dir=base.data_dir,
        seed=base.seed,
        image_size=at_smallest.student_size,
        resize=base.resize,
        cache=base.data_cache,
    )
    best = (float("inf"), "")
    with tempfile.TemporaryDirectory() as scratch:
        for student in choices("student", base.student):
            for mode in choices("modes", base.modes[0]):
                model = tfkd.models.build(
                    student, splits.preprocessing.input_shape, splits.num_classes
                )
                representative = (
                    export.representative_set(splits, max(16, splits.num_classes))
                    if mode in export.INTEGER_MODES
                    else None
                )
                card = export.export(
                    model,
                    scratch,
                    [mode],
                    preprocessing=splits.preprocessing,
                    class_names=splits.class_names,
                    representative=representative,
                    name=f"{student}",
                )
                path = os.path.join(scratch, card["variants"][f"{student}_{mode}"]["file"])
                p50 = benchmark.measure(path, threads=base.threads[0], runs=20).latency.p50_ms
                if p50 < best[0]:
                    best = (p50, f"{student} at {smallest or 'the native size'} in {mode}")
    return best


def _area(size: str) -> int:
    values = [int(v) for v in str(size).split(",") if v]
    return values[0] * values[1] if values else 0


def _points(results, layout: Layout) -> tuple[list, list]:
    """Finished trials as points, with their latency measured again one at a time; failures."""
    points, failed = [], []
    for result in results:
        # Ray names a trial's directory run_trial_<id>_<number>_<point>.
        from_path = re.match(r"run_trial_([0-9a-f]+)_", os.path.basename(result.path or ""))
        trial = (result.metrics or {}).get("trial_id") or (from_path.group(1) if from_path else "?")
        point = {k.removeprefix("config/"): v for k, v in (result.config or {}).items()}
        if not point and os.path.exists(layout.trial(trial) + ".point.json"):
            point = _read_json(layout.trial(trial) + ".point.json")
        if result.error is not None or not result.metrics or "accuracy" not in result.metrics:
            failed.append({"name": trial, "params": point, "error": _error_text(result.error)})
            continue
        metrics = result.metrics
        points.append(
            {
                "name": trial,
                "params": point,
                "accuracy": metrics["accuracy"],
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
    return re.sub(r"^(\w+: )?(error: )?", "", line)


REMEASURE_REPEATS = 3


def _remeasure(points: list, threads: int, runs: int, serial: str | None) -> float:
    """Trials measured latency while others trained; the front compares quiet measurements:
    every file measured `REMEASURE_REPEATS` times, interleaved, their median kept. Returns the
    largest relative spread of one file's repeats."""
    if serial or not points:
        return 0.0  # measured on the phone, where the search does not share the CPU
    repeats = [[] for _ in points]
    for _ in range(REMEASURE_REPEATS):
        for point, measured in zip(points, repeats):
            measured.append(
                benchmark.measure(point["file"], threads=threads, runs=runs).latency.p50_ms
            )
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

    layout = Layout(os.path.abspath(base.out_dir))
    overrides = trial_overrides(base, layout)
    # Everything is checked before anything is written or any trial starts.
    # With --loss=auto the trials take the base run's calibrated loss (not yet known): the
    # space is checked against the weak-teacher settings, which take every loss parameter kd does.
    named = (
        dict(loss="kd") if base.calibrated and "loss" not in {p.name for p in parameters} else {}
    )
    space.check(
        parameters,
        base,
        **dict(overrides, teacher=base.teacher, teacher_weights=base.teacher_weights, **named),
    )
    if address:
        _check_address(address)
    floor = None
    if latency_budget_ms is not None:
        floor = latency_floor(base, parameters)
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
            logging_level="ERROR",
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
        run_pipeline(base_run, layout.path("base.flags"), layout.path("base.log"), os.cpu_count())
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
                setup={"root": layout.root, "base": dataclasses.asdict(base), "cpus": trial_cpus},
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
                ),
            )
        results = tuner.fit()
    finally:
        ray.shutdown()

    console.banner(3, 3, "report", "measuring every trial's file again, one at a time")
    points, failed = _points(results, layout)
    references = _base_points(base, layout)
    spread = _remeasure(points + references, base.threads[0], base.benchmark_runs, base.serial)
    front_points = search_report.front(points, objectives)
    recommended, sentence = search_report.recommend(front_points, latency_budget_ms, size_budget_kb)
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        console.quiet_terminal()
    overrides = {} if FLAGS["out_dir"].present else {"out_dir": "runs/search"}
    try:
        if not FLAGS.space:
            raise ValueError(
                "--space is required: a search space file (docs/search.md), e.g. "
                "--space=pipelines/configs/digits.space."
            )
        base = config_lib.from_flags(**overrides)
        parameters = space.read(FLAGS.space)
        objectives = search_report.check_objectives(FLAGS.objective)
        for name in ("latency_budget_ms", "size_budget_kb"):
            if FLAGS[name].value is not None and not FLAGS[name].value > 0:
                raise ValueError(f"--{name} must be > 0. Received: {FLAGS[name].value}")
        summary = search(
            base,
            parameters,
            FLAGS.trials,
            objectives,
            FLAGS.address,
            FLAGS.latency_budget_ms,
            FLAGS.size_budget_kb,
            FLAGS.trial_cpus,
            FLAGS.trial_memory_gb,
            quiet=not flags.FLAGS["verbosity"].present,
        )
    except (ValueError, TrialFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "error: interrupted. Rerun the same command to resume: finished trials are kept.",
            file=sys.stderr,
        )
        return 130
    print(
        f"{summary['recommendation']}\nReport: "
        f"{os.path.join(os.path.abspath(base.out_dir), 'report.md')}"
    )
    return 0


if __name__ == "__main__":
    app.run(main)
