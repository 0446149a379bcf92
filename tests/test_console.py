"""Tests of pipelines/console.py: progress lines and the run log."""

import io
import logging as std_logging

import numpy as np
from absl import logging

from pipelines import console
from tfkd.keras import keras


class _Stream(io.StringIO):
    def __init__(self, terminal):
        super().__init__()
        self._terminal = terminal

    def isatty(self):
        return self._terminal


def _fit(stream, epochs=3):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(
        "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int64)
    model.fit(x, y, epochs=epochs, verbose=0, callbacks=[console.EpochProgress("teacher", stream)])


def test_one_line_per_epoch_outside_a_terminal():
    stream = _Stream(terminal=False)
    _fit(stream)
    lines = stream.getvalue().splitlines()
    assert [line.split("  ")[1] for line in lines] == [
        "teacher epoch 1/3",
        "teacher epoch 2/3",
        "teacher epoch 3/3",
    ]
    assert all("loss" in line and "accuracy" in line for line in lines)


def test_one_rewritten_bar_in_a_terminal():
    stream = _Stream(terminal=True)
    _fit(stream)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 3
    assert "[####################] epoch 3/3" in text and "ETA 00:00" in text


def test_the_run_log_gets_info_lines_and_library_warnings(tmp_path):
    path = tmp_path / "logs" / "run.log"
    with console.RunLog(str(path)):
        logging.info("an info line for the log")
        std_logging.getLogger("tensorflow").warning("a TensorFlow warning")
    logging.info("after the run: not in the log")
    text = path.read_text()
    assert "an info line for the log" in text and "a TensorFlow warning" in text
    assert "after the run" not in text
