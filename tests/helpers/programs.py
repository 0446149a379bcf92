"""Runs tfkd's programs (`python -m pipelines.distill ...`) in processes of their own, forked
from a server that has already imported TensorFlow, tf_keras and TF-MOT.

An interpreter that starts one of the programs spends 5-8 s importing before the program's
first line; the suite starts about sixty. Python's `forkserver` start method imports those
modules once per test worker, in a fresh interpreter that never ran a TensorFlow op, and forks
a child for each program: a real process with its own memory, exit status, signals and files,
running the module as `__main__` exactly as `python -m` does. Only the import is shared.
`tests/test_programs.py` checks that a forked run prints and records what a fresh
interpreter's does, and refuses bad flags with the same line.
"""

import atexit
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence

# Imported once in the server. Not the program modules themselves (`pipelines.distill` and the
# like define their absl flags when run as __main__, once per child).
PRELOADED = (
    "pipelines.console",
    "pipelines.config",
    "pipelines.report",
    "pipelines.run",
    "pipelines.scheduler",
    "pipelines.stages",
    "pipelines.workers",
    "pipelines.detection.stages",
)

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(list(PRELOADED))


def _command(program: str) -> list[str]:
    """The interpreter's command line for `program`: a module (`-m`) or a `.py` file."""
    return [sys.executable, *([program] if program.endswith(".py") else ["-m", program])]


def _child(
    program: str,
    argv: Sequence[str],
    cwd: str,
    env: dict,
    stdout: str | None,
    stderr: str | None,
    before: Callable[[], None] | None,
) -> None:
    """The forked program: the environment, directory, standard streams, `sys.argv` and
    `sys.path` of `python -m program argv...` (or `python program.py argv...`), then the program
    as `__main__`. stdout/stderr: a file to write, or None for the same as stdout (stderr)."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    script = program.endswith(".py")
    sys.path.insert(0, os.path.dirname(os.path.abspath(program)) if script else cwd)
    for path, fd in ((stdout, 1), (stderr, 2)):
        if path is None:
            os.dup2(1, fd)
            continue
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    # The server ignores SIGINT, and a test worker may block it (seen under pytest-xdist: a
    # Ctrl-C never arrived); a program started from a shell does neither.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    if before is not None:
        before()
    sys.argv = [program, *argv]
    # What the interpreter leaves there; --isolate_stages re-executes it.
    sys.orig_argv = [*_command(program), *argv]
    code = 0
    try:
        if script:
            runpy.run_path(program, run_name="__main__")
        else:
            runpy.run_module(program, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code
    finally:
        # What the interpreter does on its way out, which a forked child skips.
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


class Program:
    """A started program, with the part of `subprocess.Popen` the tests use."""

    def __init__(self, process, args, stdout_path, stderr_path):
        self._process = process
        self.args = args
        self.pid = process.pid
        self._stdout_path = stdout_path
        self._stderr_path = stderr_path
        self.returncode = None

    def poll(self):
        if self._process.exitcode is not None:
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout=None):
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.poll()

    def send_signal(self, sent):
        os.kill(self.pid, sent)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def output(self) -> tuple[str, str]:
        """What the finished program wrote to its stdout and stderr (once: the files go)."""
        texts = []
        for path in (self._stdout_path, self._stderr_path):
            if path is None:
                texts.append("")
                continue
            with open(path, errors="replace") as written:
                texts.append(written.read())
            os.remove(path)
        return texts[0], texts[1]


def start(
    program: str,
    argv: Sequence[str],
    *,
    cwd: str,
    env: dict | None = None,
    stdout: int | str = subprocess.PIPE,
    stderr: int | str = subprocess.PIPE,
    before: Callable[[], None] | None = None,
) -> Program:
    """Starts `python -m program argv...` (`python program argv...` for a `.py` file) in `cwd`.
    stdout, stderr: PIPE (kept, read with `output()`), DEVNULL, a file path to write, or for
    stderr STDOUT. `before`, a picklable function, runs in the child first."""
    paths: list[str | None] = []
    kept: list[str | None] = []
    for stream in (stdout, stderr):
        if stream == subprocess.PIPE:
            fd, path = tempfile.mkstemp(prefix="tfkd-program-", suffix=".txt")
            os.close(fd)
            paths.append(path)
            kept.append(path)
            continue
        if stream == subprocess.STDOUT:
            paths.append(None)
        elif stream == subprocess.DEVNULL:
            paths.append(os.devnull)
        else:
            paths.append(str(stream))
        kept.append(None)
    process = _CONTEXT.Process(
        target=_child,
        args=(program, list(argv), cwd, dict(os.environ if env is None else env), *paths, before),
    )
    process.start()
    return Program(process, [*_command(program), *argv], *kept)


def run(
    program: str,
    argv: Sequence[str],
    *,
    cwd: str,
    env: dict | None = None,
    timeout: float = 900,
    before: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    """`subprocess.run([python, -m, program, *argv], capture_output=True, text=True)`, forked."""
    started = start(program, argv, cwd=cwd, env=env, before=before)
    try:
        started.wait(timeout)
    except subprocess.TimeoutExpired:
        started.kill()
        started.wait()
        raise
    out, err = started.output()
    return subprocess.CompletedProcess(started.args, started.returncode, out, err)
