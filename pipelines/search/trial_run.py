r"""One trial of a search, in a process of its own started by the trial's Ray worker
(`pipelines/search/trainable.py`):

    python -m pipelines.search.trial_run --flagfile=SEARCH/search.flags SEARCH TRIAL POINT

Its settings are the search's with the point (a JSON object) applied (`trials.trial_config`),
written to SEARCH/trials/TRIAL.flags: `python -m pipelines.distill --flagfile=` that file reruns
the trial alone. The pipeline runs in this process; then the objectives of the file the trial
ships go to SEARCH/trials/TRIAL.objectives.json for the worker to report.
"""

# First: TensorFlow's native start-up lines go to the run log, not the terminal.
from pipelines import console  # noqa: F401  (isort: skip)
import dataclasses
import json
import sys

from absl import app

from pipelines import config as config_lib
from pipelines import distill  # defines the pipeline's flags
from pipelines.search import trials
from pipelines.search.trainable import Layout, TrialFailed
from tfkd import files


def main(argv):
    if len(argv) != 4:
        raise app.UsageError("Expected: SEARCH_DIR TRIAL POINT_JSON")
    _, root, name, point_json = argv
    layout = Layout(root)
    point = json.loads(point_json)
    # Ray forgets the point of a trial that failed before a kill; the report reads it here.
    files.write_text(layout.point(name), json.dumps(point, sort_keys=True))
    config = trials.trial_config(config_lib.from_flags(), point, layout, name)
    flags_text = trials.write_flags(config, layout.trial(name) + ".flags")
    stages = trials.unfinished(config)
    if stages:
        settings = dataclasses.asdict(dataclasses.replace(config, stages=tuple(stages)))
        # Status 1 (the parity gate failed for some file) is the objectives' to judge: only the
        # file the trial ships counts.
        distill.run(flags_text=flags_text, **settings)
    try:
        measured = trials.objectives_of(layout.trial(name), config, config.modes[0])
    except TrialFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files.write_text(layout.objectives(name), json.dumps(measured))
    return 0


if __name__ == "__main__":
    app.run(main)
