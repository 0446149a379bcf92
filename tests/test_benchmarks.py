"""Every benchmark script runs: each in its smoke mode (tiny sizes on the test fixtures,
results in a temporary directory), so a changed signature breaks a test, not a user."""

import glob
import hashlib
import json
import os
import tempfile

import pytest

from tests.helpers import programs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_MD = os.path.join(ROOT, "benchmarks", "RESULTS.md")
# Script -> the results file its smoke run writes.
SCRIPTS = {
    "comparison_cifar10": "comparison_smoke.json",
    "detection_cifar10": "detection_cifar10.json",
    "digits_kd": "digits_kd.json",
    "kd_defaults_cifar10": "kd_defaults_cifar10.json",
    "methods_cifar10": "methods_smoke.json",
    "qad_cifar10": "qad_cifar10.json",
    "train_speed": "train_speed_smoke.json",
    "latency": "latency.json",
}


def _work_dirs():
    """The benchmarks' work directories in the system's temporary directory."""
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "tfkd_*")))


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Runs every script at once (two at a time would leave a core idle while one imports)."""
    before, work_dirs = _digest(RESULTS_MD), _work_dirs()
    processes = {}
    for script in SCRIPTS:
        out = tmp_path_factory.mktemp(script)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TFKD_SMOKE_DIR=str(out))
        processes[script] = (
            out,
            programs.start(f"benchmarks.{script}", ["--smoke"], cwd=ROOT, env=env),
        )
    finished = {}
    for script, (out, process) in processes.items():
        process.wait(timeout=600)
        finished[script] = (out, process.returncode, process.output()[1])
    # A smoke run's runs and generated sets stay in its smoke directory.
    assert _work_dirs() <= work_dirs
    return before, finished


# In the slow suite: the smokes take about 120 s of CPU together, half the fast suite's budget.
# The fast path's cover for "a changed signature breaks a test" is mypy, which scripts/test runs
# over benchmarks/ against the library before pytest.
@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_benchmark_script_runs_in_smoke_mode(script, smoke_runs):
    before, finished = smoke_runs
    out, returncode, stderr = finished[script]
    assert returncode == 0, stderr[-3000:]
    with open(out / SCRIPTS[script], encoding="utf-8") as f:
        payload = json.load(f)
    assert payload, script
    section = (out / "RESULTS.md").read_text()
    assert "## " in section and "`benchmarks/" in section
    # A smoke run never touches the real results.
    assert _digest(RESULTS_MD) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, results, title",
    [
        ("default_run", "default_run.json", "The default run over seeds"),
        ("detection_pipeline", "detection_pipeline.json", "Detection through the pipeline"),
    ],
)
def test_pipeline_benchmarks_run_in_smoke_mode(tmp_path, script, results, title):
    """In the slow suite: a smoke run is a whole pipeline run, beyond the fast suite's budget.
    (benchmarks/search.py's smoke, a whole search, is what tests/test_search.py runs already;
    its verdict is search_report.against, tested in tests/test_search_report.py.)"""
    before, work_dirs = _digest(RESULTS_MD), _work_dirs()
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="2",
        TFKD_SMOKE_DIR=str(tmp_path),
        RAY_USAGE_STATS_ENABLED="0",
    )
    result = programs.run(f"benchmarks.{script}", ["--smoke"], cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((tmp_path / results).read_text())
    assert payload
    assert title in (tmp_path / "RESULTS.md").read_text()
    assert _digest(RESULTS_MD) == before
    assert _work_dirs() <= work_dirs
