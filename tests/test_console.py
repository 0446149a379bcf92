"""Tests of pipelines/console.py: the run log."""

import logging as std_logging

from absl import logging

from pipelines import console


def test_the_run_log_gets_info_lines_and_library_warnings(tmp_path):
    path = tmp_path / "logs" / "run.log"
    with console.RunLog(str(path)):
        logging.info("an info line for the log")
        std_logging.getLogger("tensorflow").warning("a TensorFlow warning")
    logging.info("after the run: not in the log")
    text = path.read_text()
    assert "an info line for the log" in text and "a TensorFlow warning" in text
    assert "after the run" not in text
