"""The Ray Tune trainable of a search, and where a search writes. Free of TensorFlow: a trial's
Ray worker only starts the trial's process (`python -m pipelines.search.trial_run`), which
imports TensorFlow once, trains, and writes the trial's objectives for the worker to report.
The worker stays at Ray's own size instead of holding a second TensorFlow beside its trial
(tests/test_search.py checks that this module imports no TensorFlow)."""

import dataclasses
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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

    @property
    def base_settings(self) -> str:
        """The search's own settings as a flags file, which every trial's process starts from."""
        return self.path("search.flags")

    def trial(self, name: str) -> str:
        return self.path("trials", name)

    def point(self, name: str) -> str:
        return self.trial(name) + ".point.json"

    def objectives(self, name: str) -> str:
        return self.trial(name) + ".objectives.json"

    def cache(self, image_size: tuple[int, ...]) -> str:
        size = "x".join(map(str, image_size)) if image_size else "native"
        return self.path("teacher_cache", size)


def run_program(module: str, args: list[str], log_path: str, cpus: int) -> int:
    """`python -m module args` with its output appended to `log_path` and `cpus` TensorFlow
    threads; returns its exit status."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
        TF_NUM_INTRAOP_THREADS=str(cpus),
        TF_NUM_INTEROP_THREADS="1",
    )
    with open(log_path, "a", encoding="utf-8") as log:
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            check=False,
        ).returncode


def last_error(log_path: str) -> str | None:
    """The last error line a program wrote to its log (else its last line)."""
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line[:40]]
    return (errors or lines)[-1] if errors or lines else None


def run_trial(point: dict, setup: dict) -> None:
    """A Ray Tune trial: the process of one point (its pipeline run and objectives); reports
    the objectives."""
    import ray
    from ray import tune

    name = tune.get_context().get_trial_id()
    layout = Layout(setup["root"])
    log_path = layout.trial(name) + ".log"
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    status = run_program(
        "pipelines.search.trial_run",
        [f"--flagfile={layout.base_settings}", layout.root, name, json.dumps(point)],
        log_path,
        setup["cpus"],
    )
    if status != 0:
        raise TrialFailed(last_error(log_path) or f"exit status {status} (see {log_path})")
    with open(layout.objectives(name), encoding="utf-8") as handle:
        measured = json.load(handle)
    measured["node"] = ray.get_runtime_context().get_node_id()
    tune.report(measured)
