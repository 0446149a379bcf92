r"""Measures the `.tflite` files of a finished run again (host, and a phone with --serial) and
rewrites its report.

    python -m pipelines.benchmark --flagfile=runs/digits/flags.txt --threads=1,2,4
    python -m pipelines.benchmark --flagfile=runs/digits/flags.txt --serial=R58M123 \
        --benchmark_binary=/path/to/android_aarch64_benchmark_model
"""

# First: TensorFlow's native start-up lines go to the run log, not the terminal.
from pipelines import console  # noqa: F401  (isort: skip)
from absl import app, flags

from pipelines import config as config_lib
from pipelines import report, scheduler, stages

FLAGS = flags.FLAGS
config_lib.define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, _, _ = scheduler.run_from_flags(stages=tuple(stages.measuring(FLAGS.serial)))
    print(report.terminal_summary(config.out_dir, failure=None))
    return 0


if __name__ == "__main__":
    app.run(main)
