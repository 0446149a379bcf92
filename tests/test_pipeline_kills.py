"""Killed runs resume: SIGKILL during distillation, at every stage boundary, mid-export and
mid-report; SIGTERM says how to resume. A file of its own so that pytest-xdist (--dist
loadfile) can run it beside test_pipeline.py."""

import functools
import json
import os
import signal

import numpy as np
import pytest

import tfkd
from pipelines.stages import STAGE_NAMES
from tests.helpers import kill_at, programs
from tests.test_pipeline import ROOT

# A fixed loss: the race's own kills are the last test (it passes --loss=auto).
KILL_FLAGS = (
    "--flagfile=pipelines/configs/digits.flags",
    "--loss=kd",
    "--teacher_epochs=1",
    "--student_epochs=1",
    "--qat_epochs=1",
    "--modes=float32,int8_io_uint8",
    "--max_drop_points=100",
    "--benchmark_runs=3",
)


def _run(out, flags=(), before=None):
    """The pipeline with KILL_FLAGS and `flags` on `out`, in a process of its own."""
    return programs.run(
        "pipelines.distill",
        [*KILL_FLAGS, *flags, f"--out_dir={out}"],
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        before=before,
    )


def _killed_run(out, target, nth, *, after_write=False, term=False, flags=()):
    """The pipeline, SIGKILLed at the `nth` call of `target` (tests/helpers/kill_at.py):
    (exit status, stderr)."""
    result = _run(out, flags, functools.partial(kill_at.arm, target, nth, after_write, term))
    return result.returncode, result.stderr


def _assert_whole(out):
    """Every file the manifest records has its recorded hash, and every visible artifact is
    whole: no half-written file is ever in place."""
    import hashlib

    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["stages"].values():
        for relative, digest in entry["outputs"].items():
            assert hashlib.sha256((out / relative).read_bytes()).hexdigest() == digest, relative
    for model in out.rglob("*.tflite"):
        if not model.name.startswith("."):
            tfkd.measure.runtime.load_interpreter(str(model))
    for document in out.rglob("*.json"):
        if not document.name.startswith("."):
            json.loads(document.read_text())


def _terminated(out, target, nth, flags=()):
    """SIGTERM at the `nth` call of `target`: one line saying how to resume, no traceback, whole
    files."""
    status, err = _killed_run(out, target, nth, term=True, flags=flags)
    assert status == 143, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: terminated (SIGTERM). Rerun the same command to resume"), last
    assert "Traceback" not in err, target
    _assert_whole(out)


@pytest.mark.slow
def test_killed_at_every_stage_boundary_and_mid_write_then_reruns_complete(tmp_path):
    """One run directory: SIGTERM during training; SIGKILL after the teacher's training before
    its record, then as each next stage starts; SIGTERM in the export and SIGKILL mid-write of a
    file and of the report, each in a rerun of those stages. Files stay whole throughout, and
    each rerun goes on from what was recorded."""
    out = tmp_path / "run"
    _terminated(out, "tfkd.progress.TrainingProgress.on_epoch_end", 1)
    # Killed after the teacher's training, before it is recorded: the next process trains it
    # again. The same code records every stage.
    status, err = _killed_run(out, "pipelines.run.RunDirectory.record", 1)
    assert status == -signal.SIGKILL, err[-3000:]
    _assert_whole(out)
    assert not json.loads((out / "manifest.json").read_text())["stages"]
    # Then each process runs one more stage and dies as the next one starts.
    recorded = []
    for _ in range(len(STAGE_NAMES) + 1):
        status, err = _killed_run(out, "pipelines.run.RunDirectory.start", 2)
        if status == 0:
            break
        assert status == -signal.SIGKILL, err[-3000:]
        _assert_whole(out)
        recorded.append(len(json.loads((out / "manifest.json").read_text())["stages"]))
    assert status == 0, err[-3000:]
    # Every stage but the last (and the device stage: no --serial) at a boundary of its own.
    assert recorded == list(range(1, len(STAGE_NAMES) - 1))
    assert (out / "report.md").exists()
    # In the export: terminated after the first .tflite file, then killed between writing one
    # and putting it in place.
    again = ("--stages=export,verify,benchmark,report",)
    _terminated(out, "tfkd.export.conversion.convert", 2, flags=again)
    assert (
        _killed_run(out, "tfkd.files.atomic_path", 1, after_write=True, flags=again)[0]
        == -signal.SIGKILL
    )
    _assert_whole(out)
    assert list(out.rglob(".*.tmp*")), "the kill left the temporary file it was writing"
    rerun = _run(out, again)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not list(out.rglob(".*.tmp*")), "the next run removes what the killed one left"
    # Mid-report.
    report_only = ("--stages=report",)
    assert (
        _killed_run(out, "tfkd.files.atomic_path", 1, after_write=True, flags=report_only)[0]
        == -signal.SIGKILL
    )
    _assert_whole(out)
    assert _run(out, report_only).returncode == 0
    _assert_whole(out)
    assert json.loads((out / "report.json").read_text())["models"]


@pytest.mark.slow
def test_killed_in_the_race_then_in_distillation_resumes_each_time(tmp_path):
    """--loss=auto killed twice. First while the second probe is being measured: the rerun keeps
    the first probe's result, measures the second from its backup without training it further,
    and the winner continues from its probe. That rerun is killed once the winner carries on:
    the last run goes on from the winner's last epoch and reuses the finished stages."""
    out = tmp_path / "run"
    epochs = 5
    race = (
        "--loss=auto",
        "--student_loss_weight=0.9",
        "--teacher_epochs=2",
        f"--student_epochs={epochs}",
        "--modes=float32",
    )
    status, err = _killed_run(out, "tfkd.measure.batch_norm.precise_batch_norm", 2, flags=race)
    assert status == -signal.SIGKILL, err[-3000:]
    probes = out / "checkpoints" / "student_probes"
    assert (probes / "kd.json").exists() and not (probes / "calibration.json").exists()
    first = json.loads((probes / "kd.json").read_text())

    # The teacher and the student alone are reused and no probe trains: the winner's second
    # epoch after its probe is the first epoch end of this run, and it is killed there, before
    # that epoch's backup.
    second = _run(out, race, functools.partial(kill_at.arm, kill_at.EPOCH_END, 2))
    assert second.returncode == -signal.SIGKILL, second.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"teacher", "baseline"}
    # kd's probe is not trained again; the killed probe had finished its one epoch.
    assert "student (probe: kd)" not in second.stdout
    assert "student (probe: dist) epoch" not in second.stdout
    assert "  student epoch 2/5" in second.stdout and "  student epoch 1/5" not in second.stdout
    probe_epochs = tfkd.distill.calibration.probe_steps(epochs)
    winner = json.loads((probes / "calibration.json").read_text())["candidate"]
    assert any(
        int(index.stem.split("-")[-1]) > probe_epochs
        for index in (probes / winner).rglob("ckpt-*.index")
    ), "killed before the winner carried on from its probe"

    result = _run(out, race)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "teacher: finished earlier, unchanged; reused" in result.stdout
    assert "baseline: finished earlier, unchanged; reused" in result.stdout
    assert "student (probe:" not in result.stdout, "the race ran again"
    first_epoch = next(
        line for line in result.stdout.splitlines() if line.strip().startswith("student epoch ")
    )
    resumed_at = int(first_epoch.split("epoch ")[1].split("/")[0])
    assert resumed_at > probe_epochs + 1, "distillation restarted instead of resuming"
    manifest = json.loads((out / "manifest.json").read_text())
    calibration = manifest["stages"]["student"]["metrics"]["calibration"]
    assert calibration["probe_accuracy"]["kd"] == pytest.approx(np.mean(first["correct"]))
    assert not probes.exists()
    # The full log, INFO lines and TensorFlow's start-up included, is in the run directory.
    log = (out / "logs" / "run.log").read_text()
    assert (
        "Stage teacher: finished earlier" in log and "Stage student: running (interrupted)." in log
    )
    assert (out / "report.md").exists()
