"""Progress of long work for a person watching: training (`TrainingProgress`, a Keras callback)
and counted work such as decoding, teacher logits, calibration and verification (`Progress`).

In a terminal, one bar per piece of work, rewritten in place at most once a second, with the
rate and the ETA of the whole piece (a training stage's every epoch). Elsewhere (a log file,
CI) whole lines: one per epoch, one at the end, and one at least every `every_seconds` of work
in between, so the longest work is never silent.
"""

import sys
import time
from collections.abc import Callable

from tfkd.keras import keras

# How often a terminal bar is rewritten, and how often a line is written elsewhere.
TERMINAL_SECONDS = 1.0
FILE_SECONDS = 30.0

Clock = Callable[[], float]


def _bar(done: float, total: float) -> str:
    filled = int(20 * min(done / total, 1.0)) if total else 20
    return f"[{'#' * filled}{'.' * (20 - filled)}]"


def duration(seconds: float) -> str:
    """`MM:SS`, or `H:MM:SS` from an hour: how ETAs and elapsed times are shown."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return (
        f"{hours}:{time.strftime('%M:%S', time.gmtime(rest))}"
        if hours
        else time.strftime("%M:%S", time.gmtime(rest))
    )


class _Writer:
    """Where progress goes: `\\r`-rewritten in a terminal, whole lines elsewhere, each at most
    once per interval."""

    def __init__(self, stream, clock: Clock, every_seconds: float):
        self.stream = stream or sys.stdout
        self.terminal = self.stream.isatty()
        self.clock = clock
        self.interval = TERMINAL_SECONDS if self.terminal else every_seconds
        self.last = clock()
        self._width = 0

    def due(self) -> bool:
        return self.clock() - self.last >= self.interval

    def clear(self) -> None:
        """Removes a bar from the terminal (nothing to remove elsewhere)."""
        if self.terminal and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def show(self, text: str, final: bool = False) -> None:
        self.last = self.clock()
        if self.terminal:
            padding = " " * max(0, self._width - len(text))
            self._width = 0 if final else len(text)
            self.stream.write(f"\r{text}{padding}" + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def counted(batches, progress: "Progress", total: int):
    """`batches` (of `(inputs, labels, ...)`) as they are, reporting the examples done so far to
    `progress` after each one."""
    done = 0
    for batch in batches:
        yield batch
        done += len(batch[-1] if isinstance(batch, tuple) else batch)
        progress(done, total)


class Progress:
    """`progress(done, total)` for counted work (`unit`: what is counted).

    Args:
        label: what the work is ("decoding images").
        unit: what `done` and `total` count, for the rate ("images/s").
        stream: where to write (stdout when None); a terminal gets a bar.
        every_seconds: the longest silence outside a terminal.
        clock: seconds, replaceable for tests.
        summary: end with a line saying how long it took; False leaves nothing behind (the
            bar is cleared) for work that is one of many quick steps.
    """

    def __init__(
        self,
        label: str,
        unit: str = "images",
        stream=None,
        every_seconds: float = FILE_SECONDS,
        clock: Clock = time.monotonic,
        summary: bool = True,
    ):
        self.label = label
        self.unit = unit
        self.summary = summary
        self._writer = _Writer(stream, clock, every_seconds)
        self._started: float | None = None

    def __call__(self, done: int, total: int) -> None:
        now = self._writer.clock()
        if self._started is None:
            self._started = now
        elapsed = now - self._started
        if done >= total:
            if self.summary:
                self._writer.show(
                    f"  {self.label}: {total:,} {self.unit} in {duration(elapsed)}", final=True
                )
            else:
                self._writer.clear()
            return
        if not self._writer.due():
            return
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = duration((total - done) / rate) if rate else "--:--"
        bar = f" {_bar(done, total)}" if self._writer.terminal else ""
        self._writer.show(
            f"  {self.label}{bar} {done:,}/{total:,}  {rate:,.0f} {self.unit}/s  ETA {eta}"
        )


class TrainingProgress(keras.callbacks.Callback):
    """A training stage's progress: updated inside every epoch (every batch, at most once a
    second, in a terminal; a line at least every 30 s elsewhere) and once at each epoch's end
    with its metrics. The rate and ETA cover the stage's remaining epochs; a resumed training
    (Keras' `BackupAndRestore`) counts from where it resumed.

    Args:
        label: the stage ("teacher").
        batch_size: images per step, for the rate (steps/s when None).
        stream, every_seconds, clock: as for `Progress`.
    """

    METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")

    def __init__(
        self,
        label: str,
        batch_size: int | None = None,
        stream=None,
        every_seconds: float = FILE_SECONDS,
        clock: Clock = time.monotonic,
    ):
        super().__init__()
        self.label = label
        self.batch_size = batch_size
        self._writer = _Writer(stream, clock, every_seconds)

    def on_train_begin(self, logs=None):
        self._started = self._writer.clock()
        self._steps_here = 0
        self._epochs_here = 0
        self._epoch = 0
        self._writer.last = self._started

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _totals(self) -> tuple[int, int]:
        return int(self.params.get("epochs") or self._epoch + 1), int(self.params.get("steps") or 0)

    def _rate_and_eta(self, remaining_steps: float) -> tuple[str, str]:
        elapsed = self._writer.clock() - self._started
        if not self._steps_here or elapsed <= 0:
            return "", "--:--"
        per_second = self._steps_here / elapsed
        rate = (
            f"{per_second * self.batch_size:,.0f} images/s"
            if self.batch_size
            else f"{per_second:,.1f} steps/s"
        )
        return rate, duration(remaining_steps / per_second)

    def on_train_batch_end(self, batch, logs=None):
        self._steps_here += 1
        if not self._writer.due():
            return
        epochs, steps = self._totals()
        done = batch + 1
        remaining = (steps - done) + steps * (epochs - self._epoch - 1) if steps else 0
        rate, eta = self._rate_and_eta(remaining)
        where = f"epoch {self._epoch + 1}/{epochs}  batch {done}/{steps or '?'}"
        loss = f"  loss {logs['loss']:.4f}" if logs and "loss" in logs else ""
        terminal = self._writer.terminal and steps
        bar = f" {_bar(self._epoch + done / steps, epochs)}" if terminal else ""
        self._writer.show(f"  {self.label}{bar} {where}{loss}  {rate}  ETA {eta}")

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_here += 1
        epochs, steps = self._totals()
        done = epoch + 1
        _, eta = self._rate_and_eta(steps * (epochs - done))
        metrics = "  ".join(f"{k} {logs[k]:.4f}" for k in self.METRICS if k in (logs or {}))
        per_epoch = (self._writer.clock() - self._started) / self._epochs_here
        if self._writer.terminal:
            self._writer.show(
                f"  {self.label} {_bar(done, epochs)} epoch {done}/{epochs}  {metrics}  ETA {eta}",
                final=done == epochs,
            )
        else:
            self._writer.show(
                f"  {self.label} epoch {done}/{epochs}  {metrics}  {per_epoch:.1f} s/epoch"
            )

    def on_train_end(self, logs=None):
        # Stopped early in a terminal: end the bar's line.
        epochs, _ = self._totals()
        if self._writer.terminal and self._epochs_here and self._epoch + 1 < epochs:
            self._writer.stream.write("\n")
            self._writer.stream.flush()
