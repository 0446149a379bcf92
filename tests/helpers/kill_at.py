"""Test harness: a pipeline process that SIGKILLs itself at the Nth call of a function, the way
a power cut or the OOM killer would end a run (or sends itself SIGTERM, as `kill`, a batch
scheduler or a container runtime would).

`arm` runs in the program's process before the program (`tests.helpers.programs.start`'s
`before`). TARGET is `module.function` or `module.Class.method`. With `after_write`, TARGET is a
context manager yielding a temporary path (tfkd.files.atomic_path): the kill comes after the
data is written to it and before it would be renamed into place.
"""

import contextlib
import importlib
import os
import signal

# Every training's epoch end, before that epoch's backup is written (all stages train with
# BackupAndRestore): its Nth call is a fixed point in a run.
EPOCH_END = "tf_keras.callbacks.BackupAndRestore.on_epoch_end"


def arm(target: str, nth: int, after_write: bool = False, term: bool = False) -> None:
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        break
    attribute = parts[-1]
    original = getattr(owner, attribute)
    calls = [0]
    sent = signal.SIGTERM if term else signal.SIGKILL

    def kill_on_nth():
        calls[0] += 1
        if calls[0] == nth:
            os.kill(os.getpid(), sent)

    if after_write:

        @contextlib.contextmanager
        def patched(*args, **kwargs):
            with original(*args, **kwargs) as tmp:
                yield tmp
                kill_on_nth()
    else:

        def patched(*args, **kwargs):
            kill_on_nth()
            return original(*args, **kwargs)

    setattr(owner, attribute, patched)
