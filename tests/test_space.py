"""The search space file: parsing, what may be searched, and the check before any trial."""

import glob
import os

import optuna
import pytest
from absl import flags

from pipelines import config as config_lib
from pipelines.config import Config
from pipelines.search import space

CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines", "configs"
)

SPACE = """
# a comment line
student: cnn_tiny | cnn_small     # choices
image_size: 16,16 | 24,24
temperature: 1.0 .. 8.0
learning_rate: 0.0003 .. 0.003 log
student_epochs: 10 .. 40
modes: int8 | float16
"""


def test_parse_reads_choices_ranges_and_scales():
    parameters = {p.name: p for p in space.parse(SPACE)}
    assert list(parameters) == [
        "student",
        "image_size",
        "temperature",
        "learning_rate",
        "student_epochs",
        "modes",
    ]
    assert parameters["student"].choices == ("cnn_tiny", "cnn_small")
    assert parameters["image_size"].choices == ("16,16", "24,24")
    temperature = parameters["temperature"].distribution()
    assert isinstance(temperature, optuna.distributions.FloatDistribution)
    assert (temperature.low, temperature.high, temperature.log) == (1.0, 8.0, False)
    assert parameters["learning_rate"].distribution().log
    epochs = parameters["student_epochs"].distribution()
    assert isinstance(epochs, optuna.distributions.IntDistribution)
    assert (epochs.low, epochs.high) == (10, 40)
    assert parameters["student_epochs"].ends() == (10, 40)


def test_trial_config_types_values_as_the_flags_do():
    base = Config(loss="kd")
    config = space.trial_config(
        base,
        {
            "image_size": "16,16",
            "temperature": 2.5,
            "student_epochs": 12,
            "modes": "int8",
            "student": "cnn_tiny",
        },
        out_dir="elsewhere",
    )
    assert config.image_size == (16, 16)
    assert config.temperature == 2.5 and isinstance(config.temperature, float)
    assert config.student_epochs == 12 and config.modes == ("int8",)
    assert config.student == "cnn_tiny" and config.out_dir == "elsewhere"
    # Everything else is the base's.
    assert config.teacher == base.teacher and config.batch_size == base.batch_size


@pytest.mark.parametrize(
    "text, message",
    [
        ("teacher: cnn_large | resnet8", "shapes the teacher or the run"),
        ("seed: 0 | 1", "shapes the teacher or the run"),
        ("colour: red | blue", "not a pipeline flag"),
        ("temperature 1 .. 2", "write `flag: a | b | c`"),
        ("temperature:", "write `flag: a | b | c`"),
        ("temperature: 4 .. 1", "finite low < high"),
        ("temperature: 1 .. nan", "finite low < high"),
        ("temperature: one .. two", "two numbers"),
        ("learning_rate: 0 .. 1 log", "log range needs low > 0"),
        ("temperature: 1 .. 2 cubic", "only `log`"),
        ("student: cnn_tiny | | cnn_small", "empty choice"),
        ("student: cnn_tiny | cnn_tiny", "appears twice"),
        ("modes: int8,float16 | float32", "one export mode"),
        ("loss: kd\nloss: dkd", "appears twice"),
    ],
)
def test_bad_lines_are_named(text, message):
    with pytest.raises(ValueError, match="line") as error:
        space.parse(text)
    assert message in str(error.value)


def test_an_empty_space_file_is_refused(tmp_path):
    path = tmp_path / "empty.space"
    path.write_text("# nothing but comments\n\n")
    with pytest.raises(ValueError, match="is empty: name at least one flag"):
        space.read(str(path))
    with pytest.raises(ValueError, match="cannot be read"):
        space.read(str(tmp_path / "missing.space"))


def test_check_names_a_choice_no_trial_could_run():
    base = Config()  # --loss=auto: each value is checked with kd (space.check)
    parameters = space.parse("student: cnn_tiny | no_such_net\ntemperature: 1 .. 4")
    with pytest.raises(ValueError, match="student: no_such_net: --student=no_such_net is not"):
        space.check(parameters, base)
    # Range ends are checked as well: a weight above 1 is refused.
    with pytest.raises(ValueError, match="student_loss_weight: 1.5"):
        space.check(space.parse("student_loss_weight: 0.5 .. 1.5"), base)
    space.check(space.parse("student: cnn_tiny | cnn_small\ntemperature: 1 .. 4"), base)


def test_a_detection_space_refuses_what_the_shared_teacher_or_a_detector_cannot_vary(tmp_path):
    base = Config(
        dataset=f"coco:{tmp_path}",
        image_size=(64, 64),
        teacher="detector_large",
        student="detector_small",
        modes=("float32", "int8_io_uint8"),
    )
    space.check(
        space.parse(
            "student: detector_small | ssdlite_mobilenet_v2\ntemperature: 1 .. 4\n"
            "modes: float32 | int8_io_uint8"
        ),
        base,
    )
    with pytest.raises(ValueError, match="image_size cannot be searched for a detector"):
        space.check(space.parse("image_size: 64,64 | 128,128"), base)
    with pytest.raises(ValueError, match=r"loss: kd: .*does not take --loss=kd"):
        space.check(space.parse("loss: kd | dkd"), base)
    with pytest.raises(ValueError, match="student: resnet8: --student=resnet8 is not a detector"):
        space.check(space.parse("student: detector_small | resnet8"), base)
    with pytest.raises(ValueError, match="modes: int8: --modes=int8: detectors export to"):
        space.check(space.parse("modes: float32 | int8"), base)


def test_every_searchable_name_is_a_config_field():
    fields = set(Config.__dataclass_fields__)
    assert set(space.SEARCHABLE) <= fields


@pytest.mark.parametrize(
    "space_file", sorted(glob.glob(os.path.join(CONFIGS, "*.space"))), ids=os.path.basename
)
def test_each_recipe_space_is_valid_for_its_recipe(space_file):
    """A shipped space file checks against the recipe of its name, as the search checks it
    before any trial."""
    values = flags.FlagValues()
    config_lib.define_flags(values)
    values(["search", f"--flagfile={space_file.removesuffix('.space')}.flags"])
    space.check(space.read(space_file), config_lib.from_flags(values))
