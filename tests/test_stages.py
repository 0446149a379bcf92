"""Tests of the stage table and of the scheduler's checks that run before any training."""

import inspect

import pytest

import tfkd
from pipelines import scheduler, stages
from pipelines.config import Config


def test_the_table_is_consistent():
    names = [s.name for s in stages.STAGES]
    assert len(set(names)) == len(names) and tuple(names) == stages.STAGE_NAMES
    for index, stage in enumerate(stages.STAGES):
        # A stage only reads what an earlier stage wrote.
        assert set(stage.needs) <= set(names[:index]), stage.name
        assert list(inspect.signature(stage.fn).parameters) == ["ctx"], stage.name
        if stage.model or stage.mixed_precision:
            assert stage.trains, f"{stage.name} trains a model, so it runs in the strategy"
    models = [s.model for s in stages.STAGES if s.model]
    assert len(set(models)) == len(models)


def test_all_runs_every_stage_but_the_phone_without_a_serial():
    assert stages.selected(("all",), None) == [n for n in stages.STAGE_NAMES if n != "device"]
    assert stages.selected(("all",), "R58") == list(stages.STAGE_NAMES)
    assert stages.selected(("report", "teacher"), None) == ["teacher", "report"]
    assert stages.measuring(None) == ["benchmark", "report"]
    assert stages.measuring("R58") == ["benchmark", "device", "report"]


@pytest.mark.parametrize(
    "requested, message",
    [
        (("teacher", "train"), "--stages=teacher,train: give 'all' or stages"),
        (("all", "teacher"), "--stages=all,teacher: give 'all' or stages"),
        (("device",), "--stages includes device but no --serial"),
    ],
)
def test_a_bad_stage_selection_names_the_flag(requested, message):
    with pytest.raises(ValueError, match=message):
        stages.selected(requested, None)


def test_a_stage_without_its_prerequisites_is_refused_before_anything_is_written(tmp_path):
    config = Config(out_dir=str(tmp_path / "run"), stages=("student",))
    with pytest.raises(ValueError, match=r"Stage student needs \['teacher'\]"):
        scheduler.execute(config)
    assert not (tmp_path / "run").exists()


def test_a_bad_data_source_is_refused_before_anything_is_written(tmp_path):
    config = Config(out_dir=str(tmp_path / "run"), dataset=f"folder:{tmp_path / 'typo'}")
    with pytest.raises((ValueError, FileNotFoundError), match="typo"):
        scheduler.execute(config)
    assert not (tmp_path / "run").exists()


def test_feature_layer_names_are_checked_before_anything_is_written(tmp_path):
    config = Config(out_dir=str(tmp_path / "run"), features=("block1_relu:nope:hint:1",))
    with pytest.raises(ValueError, match=r"Student 'cnn_small' has no layer 'nope'"):
        scheduler.execute(config)
    assert not (tmp_path / "run").exists()


def test_every_training_stage_names_its_epochs_setting():
    from pipelines.config import Config

    for stage in stages.STAGES:
        if stage.model:
            assert isinstance(getattr(Config(), stage.epochs), int), stage.name


def test_a_representative_set_larger_than_the_split_is_named_before_training(tmp_path):
    from pipelines.context import Context

    config = Config(out_dir=str(tmp_path / "run"), modes=("int8",), representative_size=5000)
    with pytest.raises(ValueError, match=r"--representative_size=5000: .* at most \d+ images"):
        scheduler.execute(config)
    assert not (tmp_path / "run").exists()
    # The default adapts to a small split (CIFAR-10 sample: a few images per class).
    from tests.conftest import CIFAR_SAMPLE

    ctx = Context(
        Config(out_dir=str(tmp_path / "small"), dataset=f"folder:{CIFAR_SAMPLE}", modes=("int8",))
    )
    assert 10 <= ctx.representative_size < 200
    assert ctx.representative_size == tfkd.export.largest_representative_size(
        tfkd.data.train_labels(ctx.splits), ctx.splits.num_classes
    )
