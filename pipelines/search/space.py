"""The search space file: which pipeline flags a search varies, and over what.

One parameter per line, named as its pipeline flag; `#` starts a comment:

    student: cnn_tiny | cnn_small | resnet8     # choices, as the flag takes them
    image_size: 96,96 | 128,128
    temperature: 1.0 .. 8.0                     # a float range (uniform)
    learning_rate: 0.0003 .. 0.003 log          # a log-uniform range
    student_epochs: 10 .. 40                    # integers at both ends: an integer range

Every trial is a pipeline run with the base flags and one value per parameter. Only the settings
of the student and its training can vary: the teacher (and its cache) is trained once and shared
by every trial, so whatever shapes it stays in the base flags. `modes` names one export mode per
choice: the file a trial ships and is measured by.
"""

import dataclasses
import math

import optuna

from pipelines import config as config_lib
from pipelines.config import Config

# What a trial may change: the student, its resolution, the distillation and the export mode.
SEARCHABLE = (
    "student",
    "student_weights",
    "image_size",
    "loss",
    "loss_params",
    "temperature",
    "student_loss_weight",
    "distillation_warmup_epochs",
    "student_epochs",
    "batch_size",
    "optimizer",
    "learning_rate",
    "early_stopping_patience",
    "qat_epochs",
    "qat_learning_rate",
    "modes",
)
CHOICE_SEPARATOR, RANGE_SEPARATOR, LOG = "|", "..", "log"
Value = str | int | float


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One line of a space file: a flag and the choices or the range it takes."""

    name: str
    choices: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 0.0
    integer: bool = False
    log: bool = False

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.choices:
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.integer:
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)

    def ends(self) -> tuple[Value, ...]:
        """The values that bound this parameter: every choice, or both ends of the range."""
        if self.choices:
            return self.choices
        return (int(self.low), int(self.high)) if self.integer else (self.low, self.high)


def parse(text: str, source: str = "the space file") -> list[Parameter]:
    """The parameters of a space file's text; `ValueError` naming the line for anything wrong."""
    parameters, seen = [], set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}, line {number} ({line!r})"
        name, colon, values = (part.strip() for part in line.partition(":"))
        if not colon or not values:
            raise ValueError(f"{where}: write `flag: a | b | c` or `flag: low .. high`.")
        if name not in SEARCHABLE:
            fields = {f.name for f in dataclasses.fields(Config)}
            why = (
                "it shapes the teacher or the run, which every trial shares: set it in the "
                "base flags"
                if name in fields
                else "it is not a pipeline flag"
            )
            raise ValueError(
                f"{where}: --{name} cannot be searched ({why}). Searchable: {list(SEARCHABLE)}."
            )
        if name in seen:
            raise ValueError(f"{where}: --{name} appears twice; give it one line.")
        seen.add(name)
        parameters.append(_parameter(name, values, where))
    return parameters


def _parameter(name: str, values: str, where: str) -> Parameter:
    if RANGE_SEPARATOR in values and CHOICE_SEPARATOR not in values:
        low_text, _, rest = (part.strip() for part in values.partition(RANGE_SEPARATOR))
        high_text, _, scale = rest.partition(" ")
        scale = scale.strip()
        if scale not in ("", LOG):
            raise ValueError(f"{where}: after the range only `{LOG}` may follow.")
        try:
            low, high = float(low_text), float(high_text)
        except ValueError:
            raise ValueError(f"{where}: a range needs two numbers, `low .. high`.") from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"{where}: a range needs finite low < high.")
        if scale == LOG and low <= 0:
            raise ValueError(f"{where}: a log range needs low > 0.")
        integer = all(_is_integer(t) for t in (low_text, high_text))
        return Parameter(name, low=low, high=high, integer=integer, log=scale == LOG)
    choices = tuple(c.strip() for c in values.split(CHOICE_SEPARATOR))
    if any(not c for c in choices):
        raise ValueError(f"{where}: an empty choice; separate choices with ` | `.")
    if len(set(choices)) != len(choices):
        raise ValueError(f"{where}: a choice appears twice.")
    if name == "modes" and any("," in c for c in choices):
        raise ValueError(
            f"{where}: each choice of modes is one export mode (the file a trial "
            "ships), e.g. `modes: int8 | float16`."
        )
    return Parameter(name, choices=choices)


def _is_integer(text: str) -> bool:
    return text.lstrip("+-").isdigit()


def read(path: str) -> list[Parameter]:
    """The parameters of the space file at `path`; an empty space is refused."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ValueError(
            f"--space={path} cannot be read ({error.strerror}). Give a space file "
            "(docs/search.md describes the format)."
        ) from error
    parameters = parse(text, source=f"--space={path}")
    if not parameters:
        raise ValueError(
            f"--space={path} is empty: name at least one flag to search, e.g. "
            "`student: cnn_tiny | cnn_small` (docs/search.md)."
        )
    return parameters


def trial_config(base: Config, values: dict, **overrides) -> Config:
    """The `Config` of a trial: `base` with the space's `values` (as the flags spell them) and
    `overrides` (already typed)."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    changed = {name: _typed(fields[name], value) for name, value in values.items()}
    return dataclasses.replace(base, **changed, **overrides)


def _typed(field: dataclasses.Field, value: Value):
    """A space value as the `Config` field holds it (the flag's parsing)."""
    element = config_lib.element_type(field)
    if element is not None:
        return tuple(element(v.strip()) for v in str(value).split(",") if v.strip())
    if field.type is float:
        return float(value)
    if field.type is int:
        return int(value)
    return str(value)


def check(parameters: list[Parameter], base: Config, **overrides) -> None:
    """Every choice and both ends of every range make a valid trial `Config`, checked before
    any trial starts.

    A trial of a --loss=auto base names its loss: the space's, or the one the base run
    calibrates (not known yet). Every other value is checked with kd, which takes every loss
    parameter the weak-teacher settings do."""
    named = dict(loss="kd") if base.calibrated else {}
    for parameter in parameters:
        if parameter.name == "image_size" and base.task == config_lib.DETECTION:
            # A classifier's teacher takes its own resolution; a detector teaches on the
            # student's anchors, which the input size sets.
            raise ValueError(
                f"--space: image_size cannot be searched for a detector (--dataset="
                f"{base.dataset}): the shared teacher predicts for the anchors of one input "
                "size. Set --image_size in the base flags."
            )
        fixed = {k: v for k, v in {**named, **overrides}.items() if k != parameter.name}
        for value in parameter.ends():
            try:
                trial_config(base, {parameter.name: value}, **fixed)
            except (ValueError, TypeError) as error:
                raise ValueError(f"--space: {parameter.name}: {value}: {error}") from error
