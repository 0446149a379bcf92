r"""The main job: data -> teacher -> student alone -> distilled student -> quantization-aware
distillation -> TFLite export -> verification (parity gate) -> latency -> report.

    python -m pipelines.distill --flagfile=pipelines/configs/digits.flags --out_dir=runs/digits

Every flag is checked before any training. Each stage writes into the run directory and records
its files (with hashes) in `manifest.json`; rerunning with the same `--out_dir` skips finished
stages and resumes an interrupted training from its last finished epoch. docs/pipeline.md
describes the stages and the run directory.
"""

# First: TensorFlow's native start-up lines go to the run log, not the terminal.
from pipelines import console  # noqa: F401  (isort: skip)
from absl import app, flags

from pipelines import config as config_lib
from pipelines import report, scheduler, workers
from pipelines.run import RunLayout
from tfkd import files

FLAGS = flags.FLAGS
config_lib.define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    return run()


def run(flags_text: str | None = None, **overrides) -> int:
    """The run of the parsed flags (with `overrides`); its exit status. `flags_text` is what the
    run directory keeps as the flags that rerun it (default: the parsed flags)."""
    config, results, strategy = scheduler.run_from_flags(**overrides)
    if not workers.is_chief(strategy):
        print(
            f"Worker {workers.worker_label(strategy)}: training stages done; the chief writes "
            "the artifacts."
        )
        return 0
    files.write_text(
        RunLayout(config.out_dir).file(RunLayout.FLAGS), flags_text or FLAGS.flags_into_string()
    )
    failure = results.get("verify", {}).get("failure")
    print(report.terminal_summary(config.out_dir, failure))
    return 1 if failure else 0


if __name__ == "__main__":
    app.run(main)
