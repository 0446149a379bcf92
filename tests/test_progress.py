"""Tests of tfkd/progress.py: progress inside long work, in a terminal and in a log file."""

import io

import numpy as np

from tfkd.keras import keras
from tfkd.progress import Progress, TrainingProgress, counted


class _Stream(io.StringIO):
    def __init__(self, terminal):
        super().__init__()
        self._terminal = terminal

    def isatty(self):
        return self._terminal


class _Clock:
    """Seconds that advance by `step` each time a batch trains (see `_Ticking`)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Ticking(keras.callbacks.Callback):
    """Makes each batch take `seconds` on the fake clock, before the progress sees it."""

    def __init__(self, clock, seconds):
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def on_train_batch_end(self, batch, logs=None):
        self.clock.now += self.seconds


def _fit(progress, epochs, batches, clock=None, seconds_per_batch=0.0):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(
        "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    x, y = np.zeros((4 * batches, 4), np.float32), np.zeros(4 * batches, np.int64)
    callbacks = [_Ticking(clock, seconds_per_batch)] if clock else []
    model.fit(x, y, batch_size=4, epochs=epochs, verbose=0, callbacks=callbacks + [progress])


def test_a_long_epoch_writes_lines_before_it_ends_outside_a_terminal():
    # One epoch of 100 batches at 1 s each: a line at least every 30 s, then the epoch's line.
    clock, stream = _Clock(), _Stream(terminal=False)
    _fit(TrainingProgress("teacher", 4, stream, clock=clock), 1, 100, clock, 1.0)
    lines = stream.getvalue().splitlines()
    inside = [line for line in lines if "batch" in line]
    assert [line.split("  batch ")[1].split()[0] for line in inside] == [
        "30/100",
        "60/100",
        "90/100",
    ]
    # 4 images per batch, one batch a second; 70 batches left after the 30th.
    assert "4 images/s" in inside[0] and "ETA 01:10" in inside[0] and "loss" in inside[0]
    assert lines[-1].startswith("  teacher epoch 1/1  loss") and "100.0 s/epoch" in lines[-1]


def test_one_line_per_epoch_when_epochs_are_short():
    stream = _Stream(terminal=False)
    _fit(TrainingProgress("teacher", stream=stream), 3, 2)
    lines = stream.getvalue().splitlines()
    assert [line.split("  ")[1] for line in lines] == [
        "teacher epoch 1/3",
        "teacher epoch 2/3",
        "teacher epoch 3/3",
    ]
    assert all("loss" in line and "accuracy" in line for line in lines)


def test_one_bar_in_a_terminal_updated_at_most_once_a_second_with_the_stage_eta():
    clock, stream = _Clock(), _Stream(terminal=True)
    # 2 epochs of 10 batches at 0.25 s each: 5 s in all, so about 5 updates inside them.
    _fit(TrainingProgress("student", 8, stream, clock=clock), 2, 10, clock, 0.25)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    updates = text.split("\r")[1:]
    inside = [u for u in updates if "batch" in u]
    assert 3 <= len(inside) <= 5, inside
    # After 4 of 20 batches: 16 left at 4 batches (32 images) a second.
    assert "epoch 1/2  batch 4/10" in inside[0] and "32 images/s" in inside[0]
    assert "ETA 00:04" in inside[0]
    assert "[####################] epoch 2/2" in updates[-1]


def test_counted_work_reports_its_rate_and_ends_with_one_line():
    clock, stream = _Clock(), _Stream(terminal=False)
    progress = Progress("decoding images", stream=stream, clock=clock)
    for done in range(0, 1001, 10):
        clock.now = done / 10  # 10 images a second
        progress(done, 1000)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "  decoding images 300/1,000  10 images/s  ETA 01:10"
    assert len(lines) == 4 and lines[-1] == "  decoding images: 1,000 images in 01:40"


def test_counted_batches_report_examples_and_a_quick_step_leaves_nothing_behind():
    clock, stream = _Clock(), _Stream(terminal=True)
    progress = Progress("verifying student_int8", stream=stream, clock=clock, summary=False)
    batches = [(np.zeros((4, 2)), np.zeros(4)), (np.zeros((4, 2)), np.zeros(4))]
    seen = []
    for batch in counted(iter(batches), progress, 8):
        clock.now += 1.5
        seen.append(len(batch[1]))
    assert seen == [4, 4]
    text = stream.getvalue()
    # The bar once (after 1.5 s), then cleared: nothing is left on the line.
    assert "verifying student_int8 [##########..........] 4/8" in text
    assert text.endswith("\r" + " " * len(text.split("\r")[1]) + "\r")
