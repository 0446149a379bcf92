"""What a person sees while a run works: a banner per stage (progress inside the work is
`tfkd.progress`); TensorFlow's native start-up chatter and INFO logs go to `RUN/logs/run.log`
instead.

Importing this module first (the programs do) imports TensorFlow and enumerates its devices with
the native stderr sent to a buffer, so the lines TensorFlow prints before its logging starts
(which ignore TF_CPP_MIN_LOG_LEVEL) land in the run log, not on the terminal.
"""

import io
import logging as std_logging
import os
import sys
import tempfile

_native_startup = b""


def _import_tensorflow_quietly() -> None:
    global _native_startup
    if "tensorflow" in sys.modules or os.environ.get("TFKD_VERBOSE_STARTUP"):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        _native_startup = sink.read()


_import_tensorflow_quietly()

from absl import logging  # noqa: E402


def banner(index: int, total: int, name: str, what: str) -> None:
    print(f"== [{index}/{total}] {name}: {what}", flush=True)


# Loggers whose INFO lines and warnings belong in the run log, not on the terminal.
_LIBRARY_LOGGERS = ("tensorflow", "py.warnings")


# In a quiet program, where TensorFlow's native (C++) stderr lines go until a run log opens.
_native_sink = None


def _divert_native_stderr() -> None:
    """Points file descriptor 2, which TensorFlow's C++ code writes to, at a buffer (later the
    run log), and Python's `sys.stderr` at a copy of the terminal: converter and tf.data
    chatter leaves the screen, tfkd's own warnings and errors stay."""
    global _native_sink
    # Already diverted, or stderr is captured by someone else (a test): leave it be.
    stderr = sys.__stderr__
    if _native_sink is not None or stderr is None or sys.stderr is not stderr:
        return
    stderr.flush()
    terminal = os.fdopen(
        os.dup(2), "w", buffering=1, encoding=stderr.encoding, errors="backslashreplace"
    )
    _native_sink = tempfile.TemporaryFile()
    os.dup2(_native_sink.fileno(), 2)
    sys.stderr = terminal
    logging.get_absl_handler().python_handler.stream = terminal


def quiet_terminal() -> None:
    """For a program run without --verbosity: the terminal gets tfkd's warnings and errors;
    INFO lines, TensorFlow's Python logs and native lines, and Python warnings go to the run
    log only."""
    _divert_native_stderr()
    logging.get_absl_handler().setLevel(std_logging.WARNING)
    std_logging.captureWarnings(True)
    for name in _LIBRARY_LOGGERS:
        library = std_logging.getLogger(name)
        library.propagate = False
        for handler in list(library.handlers):
            library.removeHandler(handler)


def _logged() -> list[std_logging.Logger]:
    """absl's logger (tfkd's and the programs' lines) and the libraries' ones."""
    return [logging.get_absl_logger(), *map(std_logging.getLogger, _LIBRARY_LOGGERS)]


def restore_terminal() -> None:
    """Points file descriptor 2 back at the terminal (before the program re-executes itself:
    the new image then finds the terminal there, as this one did)."""
    if _native_sink is not None:
        sys.stderr.flush()
        os.dup2(sys.stderr.fileno(), 2)


class RunLog:
    """While open, every log line (INFO included, TensorFlow's and Python warnings too) is
    appended to `path`, after TensorFlow's native start-up lines."""

    def __init__(self, path: str):
        self.path = path
        self._handler: std_logging.Handler | None = None
        self._verbosity = logging.INFO
        # The run log opened as file descriptor 2, in a quiet program.
        self._native: io.FileIO | None = None

    def __enter__(self) -> "RunLog":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(_native_startup)
            if _native_sink is not None:
                _native_sink.seek(0)
                f.write(_native_sink.read())
                _native_sink.seek(0)
                _native_sink.truncate()
        if _native_sink is not None:
            # Native lines from now on go straight to the run log.
            native = io.FileIO(self.path, "ab")
            os.dup2(native.fileno(), 2)
            self._native = native
        handler = std_logging.FileHandler(self.path, encoding="utf-8")
        self._handler = handler
        handler.setFormatter(
            std_logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] %(message)s"
            )
        )
        for logger in _logged():
            logger.addHandler(handler)
        # absl's verbosity grows with detail: below INFO would keep INFO lines out of the log.
        self._verbosity = logging.get_verbosity()
        logging.set_verbosity(max(self._verbosity, logging.INFO))
        return self

    def __exit__(self, *exc) -> None:
        if self._handler is not None:
            for logger in _logged():
                logger.removeHandler(self._handler)
            self._handler.close()
        logging.set_verbosity(self._verbosity)
        if self._native is not None and _native_sink is not None:
            os.dup2(_native_sink.fileno(), 2)
            self._native.close()
