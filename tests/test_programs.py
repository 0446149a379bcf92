"""The tests' forked programs (tests/helpers/programs.py) behave as the same command in a fresh
interpreter: the same printed lines, results, exit status and error line."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import programs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ("--flagfile=pipelines/configs/digits.flags", "--teacher_epochs=1", "--stages=teacher")


def _fresh(*argv):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.distill", *argv],
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _forked(*argv):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return programs.run("pipelines.distill", argv, cwd=ROOT, env=env)


def _lines(stdout, run_dir):
    """Printed lines without what differs between any two runs: the run directory, times and
    speeds, and the progress lines a slow moment adds (they carry an ETA)."""
    text = stdout.replace(str(run_dir), "RUN")
    text = re.sub(r"\d+(\.\d+)?(:\d+)* ?(s|ms|min|images/s)\b", "TIME", text)
    return [line for line in text.splitlines() if "ETA" not in line]


@pytest.mark.slow
def test_a_forked_run_prints_and_records_what_a_fresh_interpreter_does(tmp_path):
    fresh = _fresh(*FLAGS, f"--out_dir={tmp_path / 'fresh'}")
    forked = _forked(*FLAGS, f"--out_dir={tmp_path / 'forked'}")
    assert fresh.returncode == forked.returncode == 0, (fresh.stderr[-2000:], forked.stderr[-2000:])
    assert _lines(forked.stdout, tmp_path / "forked") == _lines(fresh.stdout, tmp_path / "fresh")
    assert fresh.stdout.startswith("== [1/1] teacher:") and "teacher epoch 1/1" in fresh.stdout

    def teacher(run):
        return json.loads((tmp_path / run / "manifest.json").read_text())["stages"]["teacher"]

    assert teacher("forked")["metrics"]["accuracy"] == teacher("fresh")["metrics"]["accuracy"]
    assert teacher("forked")["outputs"].keys() == teacher("fresh")["outputs"].keys()
    # A refusal: the same status and the same one line.
    bad = ("--flagfile=pipelines/configs/digits.flags", "--temperature=-1")
    fresh = _fresh(*bad, f"--out_dir={tmp_path / 'bad'}")
    forked = _forked(*bad, f"--out_dir={tmp_path / 'bad'}")
    assert fresh.returncode == forked.returncode == 2
    assert forked.stderr == fresh.stderr and "--temperature" in fresh.stderr
