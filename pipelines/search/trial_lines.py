"""One line per finished or failed trial while a search runs, with the search's ETA: Ray Tune's
own tables stay off, and a search of many minutes is never silent."""

import sys
import time

from ray import tune

from pipelines.search.report import OBJECTIVES
from tfkd.progress import duration


class TrialLines(tune.Callback):
    """Writes `trial N/TOTAL ...` to `stream` as each trial ends.

    Args:
        total: the trials the search runs (finished ones of a resumed search count).
        logs: where trial logs are, for a failed trial's line (`Layout.trial`).
    """

    def __init__(self, total: int, logs, stream=None, clock=time.monotonic):
        self.total = total
        self.logs = logs
        self.stream = stream
        self.clock = clock
        self._started = clock()
        self._ended_here = 0

    def setup(self, **info):
        # Also after a resume, which unpickles this callback from the search's saved state.
        self._started = self.clock()
        self._ended_here = 0

    def _line(self, trials, text: str) -> None:
        self._ended_here += 1
        ended = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        elapsed = self.clock() - self._started
        left = max(0, self.total - ended)
        eta = duration(elapsed / self._ended_here * left) if left else "00:00"
        stream = self.stream or sys.stdout
        stream.write(f"  trial {ended}/{self.total} {text}  ETA {eta}\n")
        stream.flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        shown = ", ".join(f"{k} {result[k]:.4g}" for k in OBJECTIVES if k in result)
        point = ", ".join(f"{k}={v}" for k, v in sorted((trial.config or {}).items()))
        self._line(trials, f"{trial.trial_id}: {shown} ({point})")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trials, f"{trial.trial_id}: failed (see {self.logs(trial.trial_id)}.log)")
