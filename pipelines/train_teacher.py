r"""Trains a teacher alone (the pipeline's teacher stage) and saves it as `.keras`.

    python -m pipelines.train_teacher --dataset=folder:PATH/cifar10 --teacher=resnet56 \
        --teacher_epochs=100 --out_dir=runs/teacher_resnet56

The result, `OUT_DIR/teacher/teacher.keras`, can be handed to `pipelines.distill --teacher=PATH`.
Takes the flags of pipelines/distill.py (those of other stages are ignored).
"""

import os

# First: TensorFlow's native start-up lines go to the run log, not the terminal.
from pipelines import console  # noqa: F401  (isort: skip)
from absl import app

from pipelines import config as config_lib
from pipelines import scheduler
from pipelines.run import RunLayout

config_lib.define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, results, _ = scheduler.run_from_flags(stages=("teacher",))
    path = RunLayout(os.path.abspath(config.out_dir)).file(RunLayout.model_files("teacher")[0])
    print(f"Teacher test accuracy {results['teacher']['accuracy']:.4f}; saved to {path}")
    return 0


if __name__ == "__main__":
    app.run(main)
