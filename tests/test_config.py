"""Tests of pipelines/config.py: one source of defaults, generated flags, one validation."""

import dataclasses

import pytest
from absl import flags

import tfkd
from pipelines import config as config_lib
from pipelines import policy
from pipelines.config import Config
from tfkd import export
from tfkd.distill import training
from tfkd.measure import benchmark, parity


def _parsed(*argv):
    values = flags.FlagValues()
    config_lib.define_flags(values)
    values(["program", *argv])
    return values


# Each pipeline default that stands for a library default, and the library constant.
LIBRARY_DEFAULTS = {
    "optimizer": training.DEFAULT_OPTIMIZER,
    "learning_rate": training.DEFAULT_LEARNING_RATE,
    "temperature": tfkd.losses.DEFAULT_TEMPERATURE,
    "student_loss_weight": tfkd.distill.distiller.DEFAULT_STUDENT_LOSS_WEIGHT,
    "representative_size": export.DEFAULT_REPRESENTATIVE_SIZE,
    "max_drop_points": parity.DEFAULT_MAX_DROP_POINTS,
    "teacher_margin_points": policy.DEFAULT_TEACHER_MARGIN_POINTS,
    "benchmark_runs": benchmark.DEFAULT_RUNS,
    "teacher_input": tfkd.distill.teacher_input.AUTO,
    "loss": tfkd.distill.calibration.DEFAULT_LOSS,
    "validation_fraction": tfkd.data.DEFAULT_VALIDATION_FRACTION,
}


@pytest.mark.parametrize("name", sorted(LIBRARY_DEFAULTS))
def test_flag_and_config_defaults_equal_the_library_defaults(name):
    assert getattr(Config(), name) == LIBRARY_DEFAULTS[name]
    assert _parsed()[name].value == LIBRARY_DEFAULTS[name]


def test_library_defaults_are_the_ones_the_library_uses():
    import inspect

    assert tfkd.losses.KD().temperature == tfkd.losses.DEFAULT_TEMPERATURE
    distiller_default = inspect.signature(tfkd.Distiller).parameters["student_loss_weight"]
    assert distiller_default.default == tfkd.distill.distiller.DEFAULT_STUDENT_LOSS_WEIGHT
    measure_default = inspect.signature(benchmark.measure).parameters["runs"]
    assert measure_default.default == benchmark.DEFAULT_RUNS
    gate_default = inspect.signature(parity.parity_gate).parameters["max_drop_points"]
    assert gate_default.default == parity.DEFAULT_MAX_DROP_POINTS


def test_every_field_has_a_flag_with_its_default_and_help():
    values = _parsed()
    for field in dataclasses.fields(Config):
        flag = values[field.name]
        assert flag.help.endswith(field.metadata["help"]) and field.metadata["help"]
        default = field.default
        expected = [str(v) for v in default] if isinstance(default, tuple) else default
        assert flag.value == expected, field.name
    assert config_lib.from_flags(values) == Config()


def test_flags_become_typed_settings():
    values = _parsed(
        "--threads=1,4",
        "--modes=int8",
        "--flip",
        "--pad_crop=2",
        "--loss=kd",
        "--student_loss_weight=0.5",
        "--select=distilled",
        "--stages=teacher",
    )
    config = config_lib.from_flags(values)
    assert config.threads == (1, 4) and config.modes == ("int8",) and config.stages == ("teacher",)
    assert config.flip is True and config.pad_crop == 2 and config.student_loss_weight == 0.5
    assert config.select == "distilled"
    assert config_lib.from_flags(values, stages=("benchmark",)).stages == ("benchmark",)
    with pytest.raises(ValueError, match="--threads=1,x"):
        config_lib.from_flags(_parsed("--threads=1,x"))


def test_flag_lines_of_a_config_make_the_same_config():
    config = Config(
        image_size=(16, 16),
        flip=True,
        pad_crop=2,
        modes=("int8",),
        threads=(1, 2),
        loss="dkd",
        loss_params=("alpha=1", "beta=8"),
        temperature=2.5,
        serial=None,
        teacher_cache="disk",
        teacher_cache_dir="shared",
    )
    assert config_lib.from_flags(_parsed(*config_lib.to_flags(config))) == config
    assert config_lib.from_flags(_parsed(*config_lib.to_flags(Config()))) == Config()


def test_an_unknown_choice_is_refused_when_flags_are_parsed():
    with pytest.raises(flags.IllegalFlagValueError, match="should be one of"):
        _parsed("--optimizer=adagrad")


def test_every_setting_names_the_stages_that_read_it():
    """`read_by` is the one declaration of which stage a setting affects (the run directory's
    build graph): every name in it is a stage, and the settings no stage reads change how or
    where a run happens, not what it computes."""
    from pipelines import stages

    unread = set()
    for field in dataclasses.fields(Config):
        assert set(field.metadata["read_by"]) <= set(stages.STAGE_NAMES), field.name
        if not field.metadata["read_by"]:
            unread.add(field.name)
    assert unread == {
        "out_dir",
        "overwrite",
        "stages",
        "strategy",
        "collective_timeout",
        "isolate_stages",
        "data_cache",
        "teacher_cache_dir",
    }
    assert set(Config().read_by("export")) == {
        "modes",
        "export_output",
        "export_teacher",
        "representative_size",
    }


def test_validation_runs_once_per_config(monkeypatch):
    calls = []
    original = tfkd.losses.from_spec
    monkeypatch.setattr(
        tfkd.losses, "from_spec", lambda *a, **k: calls.append(a) or original(*a, **k)
    )
    config = Config(loss="dkd")
    for _ in range(3):
        _ = config.distillation_loss
    assert len(calls) == 1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"student": "resnet19"}, "--student=resnet19 is not a registered model"),
        ({"teacher": "no_such_net"}, "--teacher=no_such_net is not a registered model nor"),
        ({"teacher": "/nowhere/teacher.keras"}, "--teacher=/nowhere/teacher.keras does not exist"),
        ({"teacher_epochs": 0}, "--teacher_epochs must be >= 1"),
        ({"loss": "kd", "temperature": 0.0}, "temperature"),
        ({"teacher_pool": 1.0}, r"--teacher_pool must be in \[0, 1\)"),
        ({"validation_fraction": 0.0}, r"--validation_fraction must be in \(0, 1\)"),
        ({"loss": "kld"}, r"Unknown loss 'kld'. Available: \["),
        ({"optimizer": "adagrad"}, "--optimizer=adagrad is unknown"),
        ({"student_loss_weight": 1.5}, r"--student_loss_weight must be in \[0, 1\]"),
        ({"learning_rate": -1.0}, "--learning_rate must be > 0"),
        ({"pad_crop": -2}, "--pad_crop must be >= 0"),
        ({"qat_epochs": -1}, "--qat_epochs must be >= 0"),
        ({"modes": ("float32", "int4")}, r"Unknown quantization mode 'int4'. Available"),
        ({"max_drop_points": -0.5}, "--max_drop_points must be >= 0"),
        ({"threads": (0,)}, "--threads must list"),
        ({"select": "worst"}, "--select=worst is unknown"),
        ({"features": ("a:b:hint",)}, "expected teacher_layer:student_layer:loss:weight"),
        ({"features": ("a:b:kd:1",)}, "'kd' is a logit loss"),
        ({"features": ("a:b:hint:x",)}, "weight 'x' is not a number"),
        ({"early_stopping_patience": -1}, "--early_stopping_patience must be >= 0"),
        ({"distillation_warmup_epochs": -2}, "--distillation_warmup_epochs must be >= 0"),
        ({"loss": "dkd", "loss_params": ("gamma=2",)}, "'gamma=2' is not a key=value parameter of"),
        ({"loss": "dkd", "loss_params": ("beta=x",)}, "'x' is not a number"),
        ({"loss": "kd", "loss_params": ("temperature=2",)}, r"temperature is given separately"),
        (
            {"loss": "auto", "temperature": 2.0},
            r"--loss=auto chooses .* so --temperature=2.0 would be ignored",
        ),
        ({"loss": "auto", "loss_params": ("beta=2",)}, r"--loss_params=beta=2 would be ignored"),
        ({"max_drop_points": float("nan")}, "--max_drop_points must be >= 0"),
        ({"representative_size": 0}, "--representative_size must be >= 1"),
        ({"benchmark_runs": 0}, "--benchmark_runs must be >= 1"),
        ({"collective_timeout": 0}, "--collective_timeout must be >= 1"),
        ({"strategy": "tpu"}, "does not run on TPU"),
        ({"teacher_margin_points": -1.0}, "--teacher_margin_points must be >= 0"),
        ({"teacher_cache": "ram"}, "--teacher_cache=ram is unknown"),
        ({"label_fraction": 0.0}, "--label_fraction must be > 0"),
        ({"label_fraction": 1.5}, r"--label_fraction must be in \(0, 1\]"),
        ({"unlabeled": "/photos"}, "--unlabeled=/photos: give folder:PATH"),
        ({"loss": "kd", "loss_params": ("standardize=maybe",)}, "standardize takes true or false"),
        ({"teacher_cache": "memory", "teacher_cache_views": 2}, "without --flip/--pad_crop"),
        ({"augment": "mixin"}, "--augment=mixin is unknown"),
        ({"mix_fraction": 0.0}, "--mix_fraction must be > 0"),
        ({"mix_fraction": 1.5}, r"--mix_fraction must be in \(0, 1\]"),
        ({"teacher_cache": "memory", "features": ("a:b:hint:1",)}, "stores logits only"),
        ({"teacher_cache_views": 0}, "--teacher_cache_views must be >= 1"),
        ({"jit_compile": "yes"}, "--jit_compile=yes is unknown"),
        ({"mixed_precision": "fp16"}, "--mixed_precision=fp16 is unknown"),
    ],
)
def test_bad_configuration_is_rejected_before_training(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(Config(), **change)


def test_mixing_comes_from_flags_and_lets_the_cache_keep_several_views():
    config = Config(
        augment="cutmix", mix_fraction=0.25, teacher_cache="memory", teacher_cache_views=4
    )
    assert config.mixing == tfkd.data.mixing.Mixing("cutmix", fraction=0.25)
    assert Config().mixing is None and Config().mix_fraction == tfkd.data.mixing.DEFAULT_FRACTION


def test_loss_and_its_parameters_come_from_flags():
    loss = Config(loss="dkd", loss_params=("alpha=2", "beta=4"), temperature=3.0).distillation_loss
    assert loss.get_config() == {
        "alpha": 2.0,
        "beta": 4.0,
        "temperature": 3.0,
        "standardize": False,
    }
    assert Config(loss="logit_mse").distillation_loss.get_config() == {"standardize": False}


def test_a_tflite_teacher_file_is_sent_to_the_library_cache(tmp_path):
    path = tmp_path / "teacher.tflite"
    path.write_bytes(b"\0")
    with pytest.raises(ValueError, match="tfkd.distill.teacher_cache"):
        Config(teacher=str(path))


def test_xla_is_on_only_where_it_helps_unless_asked():
    import tensorflow as tf

    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    assert Config().use_xla == has_gpu
    assert Config(jit_compile="on").use_xla
    assert not Config(jit_compile="off").use_xla


def test_teacher_input_is_for_teacher_files_and_student_weights_for_registered_students(tmp_path):
    with pytest.raises(ValueError, match="--teacher_input=raw applies to a teacher file"):
        Config(teacher="cnn_small", teacher_input="raw")
    student = tmp_path / "student.keras"
    student.write_bytes(b"")
    with pytest.raises(ValueError, match="--student_weights applies to a student built by name"):
        Config(student=str(student), student_weights="weights.h5")
    with pytest.raises(ValueError, match="not a registered model nor a model file"):
        Config(student="cnn_huge")
