"""`python -m pipelines.search`: the search's flags and its thin main (the package docstring
says what a search does)."""

# First: TensorFlow's native start-up lines go to the run log, not the terminal.
from pipelines import console  # noqa: F401  (isort: skip)
import os
import sys

from absl import app, flags

from pipelines import config as config_lib
from pipelines.search import report as search_report
from pipelines.search import space, tasks
from pipelines.search.trials import TrialFailed
from pipelines.search.tune import search

FLAGS = flags.FLAGS
config_lib.define_flags()
flags.DEFINE_string("space", None, "The search space file (docs/search.md).")
flags.DEFINE_integer(
    "trials", 12, "Trials to run (finished trials count when resuming).", lower_bound=1
)
flags.DEFINE_list(
    "objective",
    ["accuracy", "latency_ms"],
    "The run's quality (accuracy; map for a detection run, which it then defaults to) and one "
    "or both of latency_ms, size_kb.",
)
flags.DEFINE_float(
    "latency_budget_ms", None, "Recommend the most accurate model under this p50 latency."
)
flags.DEFINE_float(
    "size_budget_kb", None, "Recommend the most accurate model under this file size."
)
flags.DEFINE_string(
    "address",
    None,
    "HOST:PORT of a running Ray cluster (`ray start --head`); default: Ray on this machine.",
)
flags.DEFINE_integer(
    "trial_cpus", 1, "CPUs each trial asks Ray for (its TensorFlow threads).", lower_bound=1
)
flags.DEFINE_float(
    "trial_memory_gb",
    2.0,
    "Memory each trial asks Ray for: with the CPUs it "
    "bounds how many trials run at once on a machine.",
    lower_bound=0.1,
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        console.quiet_terminal()
    overrides = {} if FLAGS["out_dir"].present else {"out_dir": "runs/search"}
    try:
        if not FLAGS.space:
            raise ValueError(
                "--space is required: a search space file (docs/search.md), e.g. "
                "--space=pipelines/configs/digits.space."
            )
        base = config_lib.from_flags(**overrides)
        parameters = space.read(FLAGS.space)
        quality = tasks.quality(base)
        objectives = search_report.check_objectives(
            FLAGS.objective if FLAGS["objective"].present else [quality, *FLAGS.objective[1:]],
            quality,
        )
        for name in ("latency_budget_ms", "size_budget_kb"):
            if FLAGS[name].value is not None and not FLAGS[name].value > 0:
                raise ValueError(f"--{name} must be > 0. Received: {FLAGS[name].value}")
        summary = search(
            base,
            parameters,
            FLAGS.trials,
            objectives,
            FLAGS.address,
            FLAGS.latency_budget_ms,
            FLAGS.size_budget_kb,
            FLAGS.trial_cpus,
            FLAGS.trial_memory_gb,
            quiet=not flags.FLAGS["verbosity"].present,
        )
    except (ValueError, TrialFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "error: interrupted. Rerun the same command to resume: finished trials are kept.",
            file=sys.stderr,
        )
        return 130
    print(
        f"{summary['recommendation']}\nReport: "
        f"{os.path.join(os.path.abspath(base.out_dir), 'report.md')}"
    )
    return 0


if __name__ == "__main__":
    app.run(main)
