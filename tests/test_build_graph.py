"""The run directory as a build graph: a changed setting or file reruns the stages that read it
and those downstream of them, and reuses the rest (pipelines/run.py `plan`,
pipelines/scheduler.py). The planning needs no training: each case plans against a run whose
stages were recorded from the default settings. tests/test_pipeline.py runs one such change
end to end."""

import dataclasses
import json
import os

import pytest

from pipelines import scheduler, stages
from pipelines.config import Config
from pipelines.run import RunDirectory, StageInputs
from tfkd.keras import keras

EVERY_STAGE = {
    "teacher",
    "baseline",
    "student",
    "select",
    "qad",
    "export",
    "verify",
    "benchmark",
    "report",
}


def _finish_every_stage(config: Config) -> None:
    """Records every stage of the run in `config.out_dir` as finished from `config`, each with a
    small output file of its own."""
    directory = RunDirectory(config.out_dir)
    for stage in stages.selected(["all"], None):
        output = f"{stage}/out.txt"
        os.makedirs(directory.file(stage), exist_ok=True)
        with open(directory.file(output), "w", encoding="utf-8") as handle:
            handle.write(stage)
        inputs = scheduler.stage_inputs(config, directory, stage)
        directory.record(stage, [output], {"accuracy": 0.5}, inputs)


def _plan(config: Config) -> list:
    directory = RunDirectory(config.out_dir)
    return scheduler.plan(config, directory, stages.selected(config.stages, config.serial))


def _reruns(config: Config) -> dict:
    return {d.stage: d.reason for d in _plan(config) if d.rerun}


@pytest.mark.parametrize(
    "change, reruns",
    [
        # Export-only settings: training is reused.
        ({"representative_size": 150}, {"export", "verify", "benchmark", "report"}),
        ({"modes": ("float32", "int8")}, {"export", "verify", "benchmark", "report"}),
        ({"export_output": "logits"}, {"export", "verify", "benchmark", "report"}),
        ({"max_drop_points": 2.0}, {"verify", "report"}),
        ({"threads": (1, 2)}, {"benchmark", "report"}),
        ({"benchmark_runs": 7}, {"benchmark", "report"}),
        # Training settings: from the first stage that reads them.
        ({"qat_epochs": 3}, {"qad", "export", "verify", "benchmark", "report"}),
        ({"select": "distilled"}, {"select", "qad", "export", "verify", "benchmark", "report"}),
        (
            {"loss": "kd", "temperature": 2.0},
            {"student", "select", "qad", "export", "verify", "benchmark", "report"},
        ),
        ({"teacher_epochs": 3}, EVERY_STAGE - {"baseline"}),
        ({"student_epochs": 3}, EVERY_STAGE - {"teacher"}),
        ({"seed": 1}, EVERY_STAGE),
        # How and where a run happens changes nothing it computes.
        ({"strategy": "mirrored", "isolate_stages": True, "data_cache": "memory"}, set()),
    ],
)
def test_a_changed_setting_reruns_the_stages_that_read_it_and_those_downstream(
    tmp_path, change, reruns
):
    config = Config(out_dir=str(tmp_path))
    _finish_every_stage(config)
    assert _reruns(config) == {}
    planned = _reruns(dataclasses.replace(config, **change))
    assert set(planned) == reruns
    first = next((s for s in stages.STAGE_NAMES if s in reruns), None)
    if first:
        assert planned[first].startswith("settings changed: ")
        for name in change:
            if name in config.read_by(first):
                assert f"--{name} " in planned[first]
        later = [s for s in planned if s != first and not planned[s].startswith("settings")]
        assert all(planned[s].endswith(("rerun", "reruns")) for s in later), planned


def test_a_changed_teacher_file_reruns_everything_that_used_it(tmp_path):
    path = tmp_path / "teacher.keras"
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    model.save(path)
    config = Config(out_dir=str(tmp_path / "run"), teacher=str(path))
    _finish_every_stage(config)
    assert _reruns(config) == {}
    model.set_weights([w + 1.0 for w in model.get_weights()])
    model.save(path)
    planned = _reruns(config)
    assert set(planned) == EVERY_STAGE - {"baseline"}
    assert planned["teacher"] == "changed: the --teacher file"
    assert planned["student"] == "teacher reruns"
    # Asked for the student alone, which cannot run without the now stale teacher: refused.
    with pytest.raises(ValueError, match="Stage student reads the results of teacher, which"):
        _reruns(dataclasses.replace(config, stages=("student",)))
    # So is a report on stale verification, which it cannot do without.
    with pytest.raises(ValueError, match="Stage report reads the results of verify"):
        _reruns(dataclasses.replace(config, stages=("report",)))


def test_a_stage_left_stale_that_another_only_uses_is_left_out(tmp_path):
    # The report uses latencies when there are some: stale ones (other --threads) are dropped.
    config = Config(out_dir=str(tmp_path))
    _finish_every_stage(config)
    changed = dataclasses.replace(config, threads=(1, 2), stages=("report",))
    decisions = {d.stage: d for d in _plan(changed)}
    assert _reruns(changed) == {"report": "asked for"}
    assert decisions["benchmark"].stale and "--threads 1 -> 1,2" in decisions["benchmark"].reason


def test_a_stage_whose_files_changed_or_that_was_interrupted_reruns(tmp_path):
    config = Config(out_dir=str(tmp_path))
    _finish_every_stage(config)
    (tmp_path / "qad" / "out.txt").write_text("edited")
    planned = _reruns(config)
    assert planned["qad"] == "its files changed since it ran"
    assert set(planned) == {"qad", "export", "verify", "benchmark", "report"}
    directory = RunDirectory(str(tmp_path))
    directory.forget(["export"])
    directory.start("export", scheduler.stage_inputs(config, directory, "export"))
    assert _reruns(config)["export"] == "interrupted"


def test_named_stages_and_overwrite_force_a_rerun(tmp_path):
    config = Config(out_dir=str(tmp_path))
    _finish_every_stage(config)
    assert _reruns(dataclasses.replace(config, stages=("export",))) == {"export": "asked for"}
    forced = _reruns(dataclasses.replace(config, overwrite=True))
    assert set(forced) == EVERY_STAGE and set(forced.values()) == {"asked for"}


def test_backups_of_an_interrupted_stage_are_resumed_only_from_the_same_inputs(tmp_path):
    directory = RunDirectory(str(tmp_path))
    before = StageInputs({"qat_epochs": 5}, {}, {"select": "a"})
    after = StageInputs({"qat_epochs": 6}, {}, {"select": "a"})
    assert not directory.start("qad", before)  # nothing to resume from yet
    for name in ("student_qad", "student"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    reopened = RunDirectory(str(tmp_path))
    assert reopened.start("qad", before)  # killed and rerun as it was: resume
    assert not RunDirectory(str(tmp_path)).start("qad", after)
    reopened.remove_backups("qad", "student_qad")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["student"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["running"] == {"qad": after.fingerprint()}


def test_a_stage_may_read_only_what_it_or_its_upstream_declares():
    # QAD's settings are upstream of export; the student's epochs are not upstream of the teacher.
    assert stages.undeclared_reads("export", {"qat_epochs", "modes", "out_dir"}) == set()
    assert stages.undeclared_reads("teacher", {"student_epochs", "seed"}) == {"student_epochs"}
    assert stages.undeclared_reads("verify", {"threads"}) == {"threads"}


def test_a_plan_reads_each_file_once(tmp_path, monkeypatch):
    """Every stage checks its own files and its upstream's: planning hashes each file once, and
    outside a plan a rewritten file is read again."""
    from tfkd import files

    config = Config(out_dir=str(tmp_path))
    _finish_every_stage(config)
    reads = []
    original = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda path: reads.append(path) or original(path))
    assert _reruns(config) == {}
    assert sorted(reads) == sorted(set(reads)) and len(reads) == len(EVERY_STAGE)
    directory = RunDirectory(str(tmp_path))
    assert directory.done("qad")
    (tmp_path / "qad" / "out.txt").write_text("edited")
    assert not directory.done("qad")
