"""--isolate_stages: the program re-executes itself between stages, and results do not change.

A file of its own so that pytest-xdist (--dist loadfile) can run it beside test_pipeline.py."""

import json

import pytest

from tests.test_pipeline import _main


@pytest.mark.slow
def test_isolated_stages_run_in_fresh_processes_with_the_same_results(tmp_path):
    """--isolate_stages: the program re-executes itself after each training stage that is not
    the last (and after the export: the photos benchmark's run covers it); every banner shows
    once, and each stage's result is the one it has in one process. (Every later stage, QAD
    included, also runs in a process of its own in tests/test_pipeline_kills.py.)"""
    flags = [
        "--flagfile=pipelines/configs/digits.flags",
        "--loss=kd",
        "--teacher_epochs=1",
        "--student_epochs=1",
        "--stages=teacher,baseline,student",
    ]
    isolated = _main(*flags, "--isolate_stages", f"--out_dir={tmp_path / 'isolated'}")
    assert isolated.returncode == 0, isolated.stderr[-3000:]
    for index, name in enumerate(("teacher", "baseline", "student"), 1):
        assert isolated.stdout.count(f"== [{index}/3] {name}:") == 1, name
    log = (tmp_path / "isolated" / "logs" / "run.log").read_text()
    # Before baseline and student: after each training stage that is not the last.
    assert log.count("Continuing the run in a fresh process") == 2
    single = _main(*flags, f"--out_dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-3000:]
    manifests = [
        json.loads((tmp_path / run / "manifest.json").read_text())["stages"]
        for run in ("isolated", "single")
    ]
    for stage in ("teacher", "baseline", "student"):
        assert (
            manifests[0][stage]["metrics"]["accuracy"] == manifests[1][stage]["metrics"]["accuracy"]
        ), stage
