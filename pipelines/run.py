"""The run directory as a build graph: which stage produced which files (with hashes, in
`manifest.json`) from which settings and inputs (its fingerprint), so a rerun with the same
`--out_dir` reuses every stage whose fingerprint and files are unchanged and reruns the others
and everything downstream of them (`plan`).

Nothing is written until a stage starts: a run that fails its checks leaves the directory as it
found it.
"""

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import hashlib
import json
import os
import shutil
import typing
from collections.abc import Iterable, Iterator

from tfkd import files, quantize
from tfkd.keras import keras

MANIFEST = "manifest.json"
LOCK = ".lock"


class RunLayout:
    """Where each artifact of a run lives: the only place the run directory's names are written
    (docs/pipeline.md, "Run directory"). Paths only; nothing is read or written here.

    Relative names (what the manifest records) are class attributes and static methods; full
    paths are methods of a layout at `path`.
    """

    TFLITE = "tflite"
    CHECKPOINTS = "checkpoints"
    LOGS = "logs"
    RUN_LOG = os.path.join(LOGS, "run.log")
    HOST_BENCHMARK = os.path.join("benchmark", "host.json")
    DEVICE_BENCHMARK = os.path.join("benchmark", "device.json")
    REPORT_JSON = "report.json"
    REPORT_MD = "report.md"
    PARETO_PNG = "pareto.png"
    CONFIG = "config.json"
    FLAGS = "flags.txt"

    def __init__(self, path: str):
        self.path = path

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @classmethod
    def exported(cls, name: str) -> str:
        """An exported file (`.tflite`, labels, model card), relative to the run directory."""
        return os.path.join(cls.TFLITE, name)

    @staticmethod
    def model_files(name: str) -> tuple[str, str]:
        """Model `name`'s `.keras` file and its HDF5 weights (quantization-aware models: TF-MOT's
        wrappers do not survive `.keras`), relative to the run directory."""
        return os.path.join(name, f"{name}.keras"), os.path.join(name, f"{name}_weights.h5")

    def model_file(self, name: str) -> str:
        """The file holding model `name`, relative to the run directory: its HDF5 weights when
        they exist, else its `.keras` file."""
        whole, weights = self.model_files(name)
        return weights if os.path.exists(self.file(weights)) else whole

    def export_dir(self) -> str:
        return self.file(self.TFLITE)

    def checkpoints(self, *parts: str) -> str:
        """Backups of interrupted trainings (`parts`: the stage, then what it keeps)."""
        return self.file(self.CHECKPOINTS, *parts)

    def logs(self, *parts: str) -> str:
        return self.file(self.LOGS, *parts)


def check_location(path: str) -> None:
    """Raises `ValueError` when `path` cannot become a run directory: it is a file, or the
    nearest directory that exists is not writable. Writes nothing."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--out_dir={path} is a file, not a directory. Pick another --out_dir.")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"--out_dir={path}: {existing} is not writable (read-only file system "
            "or no permission). Pick another --out_dir."
        )


class RunLock:
    """Holds `RUN/.lock` while a run writes there, so a second run on the same `--out_dir` is
    refused, naming the first one's pid. The kernel releases the lock when the process ends,
    however it ends, so a killed run never leaves a stale lock."""

    def __init__(self, path: str):
        self.path = path
        self._file: typing.TextIO | None = None

    def __enter__(self) -> "RunLock":
        os.makedirs(self.path, exist_ok=True)
        lock_path = os.path.join(self.path, LOCK)
        handle = open(lock_path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise ValueError(
                    f"Another run (pid {holder}) is writing to --out_dir={self.path}. Wait for "
                    "it to finish, or use another --out_dir."
                ) from error
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _files_under(root: str, relative: str) -> list[str]:
    path = os.path.join(root, relative)
    if os.path.isfile(path):
        return [relative]
    found = []
    for directory, _, names in os.walk(path):
        found += [os.path.relpath(os.path.join(directory, n), root) for n in names]
    return sorted(found)


def _without_optimizer(model: keras.Model) -> keras.Model:
    """A compiled `model` as a functional model on the same layers, uncompiled. A trained
    model's optimizer state is most of its `.keras` file and of its loading time (a trained
    MobileNetV3Small: 11.8 MB and 3.9 s to load with it, 4.4 MB and 1.0 s without, 2 CPU cores);
    the stages after it only predict, and an interrupted training resumes from its checkpoints."""
    if model.optimizer is None or not getattr(model, "_is_graph_network", False):
        return model
    return keras.Model(model.inputs, model.outputs, name=model.name)


def _plain(value):
    """`value` as it reads back from JSON (tuples become lists), so recorded and current
    settings compare equal when they are."""
    return json.loads(json.dumps(value))


@dataclasses.dataclass(frozen=True)
class StageInputs:
    """What a stage's result depends on: the settings it reads (by field name), the hashes of
    the outside files they name (a teacher file), and the outputs of the stages it consumes
    (by stage name, one digest each)."""

    settings: dict
    files: dict
    upstream: dict

    def fingerprint(self) -> str:
        text = json.dumps(
            {"settings": self.settings, "files": self.files, "upstream": self.upstream},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether a stage reruns, and why, in a sentence a person reads before the run starts.
    A stage not selected whose results are stale (`stale`) is forgotten, not run."""

    stage: str
    rerun: bool
    reason: str
    stale: bool = False


class RunDirectory(RunLayout):
    """Stages and their outputs in `path`, each recorded with the fingerprint of its inputs.

    Args:
        path: the run directory.
        writable: False on a non-chief worker of a multi-worker run: it reads the chief's
            manifest to take the same decisions, and keeps what it records in memory.
    """

    def __init__(self, path: str, writable: bool = True):
        super().__init__(path)
        self.writable = writable
        # While a plan is made (`hashing_once`), each file is read once, not once per stage
        # that checks it; None outside, where files change.
        self._digests: dict[str, str] | None = None
        manifest_path = os.path.join(path, MANIFEST)
        self.manifest: dict = {"stages": {}, "running": {}}
        if os.path.exists(manifest_path):
            with open(manifest_path, encoding="utf-8") as f:
                self.manifest.update(json.load(f))

    def _save(self) -> None:
        if not self.writable:
            return
        os.makedirs(self.path, exist_ok=True)
        files.write_text(self.file(MANIFEST), json.dumps(self.manifest, indent=2, sort_keys=True))

    def done(self, stage: str) -> bool:
        """True when `stage` finished and every file it recorded still has its hash."""
        entry = self.manifest["stages"].get(stage)
        if entry is None:
            return False
        for relative, digest in entry["outputs"].items():
            if digest is None:  # recorded in memory by a worker that does not write here
                continue
            path = self.file(relative)
            if not os.path.exists(path) or self._sha256(path) != digest:
                return False
        return True

    def _sha256(self, path: str) -> str:
        if self._digests is None:
            return files.sha256_file(path)
        if path not in self._digests:
            self._digests[path] = files.sha256_file(path)
        return self._digests[path]

    @contextlib.contextmanager
    def hashing_once(self) -> Iterator[None]:
        """Within the block nothing is written here: each file's hash is computed once."""
        self._digests = {}
        try:
            yield
        finally:
            self._digests = None

    def metrics(self, stage: str) -> dict:
        return self.manifest["stages"][stage]["metrics"]

    def outputs_digest(self, stage: str) -> str:
        """One digest of everything finished `stage` recorded: its files' hashes and its
        metrics (later stages read both)."""
        entry = self.manifest["stages"][stage]
        text = json.dumps(
            {"outputs": entry["outputs"], "metrics": entry["metrics"]}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def start(self, stage: str, inputs: StageInputs) -> bool:
        """Marks `stage` as running with `inputs`; returns whether the backups an interrupted
        attempt left (under checkpoints/) were made from the same inputs and may be resumed."""
        previous = self.manifest["running"].get(stage)
        self.manifest["running"][stage] = inputs.fingerprint()
        self._save()
        return previous == inputs.fingerprint()

    def record(
        self,
        stage: str,
        outputs: Iterable[str],
        metrics: dict | None = None,
        inputs: StageInputs | None = None,
        reads: Iterable[str] = (),
    ) -> None:
        """Marks `stage` finished with its output files (files or folders, relative paths), the
        inputs it ran from, and the settings it was seen to read (`reads`)."""
        hashed: dict[str, str | None]
        if self.writable:
            listed = [f for relative in outputs for f in _files_under(self.path, relative)]
            hashed = {f: self._sha256(self.file(f)) for f in listed}
        else:
            hashed = dict.fromkeys(outputs)
        entry = {
            "outputs": hashed,
            "metrics": metrics or {},
            "finished": datetime.datetime.now(datetime.UTC).isoformat(),
            "reads": sorted(reads),
        }
        if inputs is not None:
            entry.update(
                fingerprint=inputs.fingerprint(),
                settings=_plain(inputs.settings),
                files=inputs.files,
                upstream=inputs.upstream,
            )
        self.manifest["stages"][stage] = entry
        self.manifest["running"].pop(stage, None)
        self._save()

    def why_stale(self, stage: str, inputs: StageInputs) -> str | None:
        """Why finished `stage` cannot be reused with `inputs` (None when it can): the
        settings that changed, with their old and new values, the outside files or the
        upstream outputs that changed."""
        entry = self.manifest["stages"][stage]
        if entry.get("fingerprint") == inputs.fingerprint():
            return None
        if "settings" not in entry:
            return "recorded without its fingerprint (an older tfkd)"
        recorded, current = entry["settings"], _plain(inputs.settings)
        changed = [
            f"--{name} {_shown(recorded.get(name))} -> {_shown(current.get(name))}"
            for name in sorted(set(recorded) | set(current))
            if recorded.get(name) != current.get(name)
        ]
        if changed:
            return "settings changed: " + ", ".join(changed)
        files_changed = [
            name for name in sorted(inputs.files) if entry["files"].get(name) != inputs.files[name]
        ]
        if files_changed:
            return "changed: " + ", ".join(f"the --{n} file" for n in files_changed)
        upstream = [n for n in inputs.upstream if entry["upstream"].get(n) != inputs.upstream[n]]
        return f"the results of {', '.join(upstream) or 'earlier stages'} changed"

    # Models ---------------------------------------------------------------------------------

    def save_model(self, name: str, model: keras.Model, root: str | None = None) -> str:
        """Saves `model` atomically as `name` (under `root` instead of the run directory, for a
        worker that does not write here), without its optimizer; returns its path relative to
        the run directory."""
        weights_only = quantize.is_quantization_aware(model)
        whole, weights = self.model_files(name)
        relative = weights if weights_only else whole
        with files.atomic_path(os.path.join(root or self.path, relative)) as tmp:
            model.save_weights(tmp) if weights_only else _without_optimizer(model).save(tmp)
        return relative

    def load_model(self, name: str, float_architecture) -> keras.Model:
        """Model `name` in safe mode; a quantization-aware one is rebuilt on
        `float_architecture()` and its weights loaded."""
        path = self.file(self.model_file(name))
        if path.endswith(".h5"):
            return quantize.load_quantized(float_architecture(), path)
        return keras.models.load_model(path, safe_mode=True, compile=False)

    def remove_stale_temporaries(self) -> list[str]:
        """Deletes temporary files a killed run left beside the artifacts it was writing
        (`tfkd.files.atomic_path` names them `.<name>.<random>.tmp<ext>`); call it only while
        holding the run's lock. Returns what it removed, relative to the run directory."""
        removed = []
        for directory, _, names in os.walk(self.path):
            for name in names:
                if name.startswith(".") and ".tmp" in name:
                    os.remove(os.path.join(directory, name))
                    removed.append(os.path.relpath(os.path.join(directory, name), self.path))
        return sorted(removed)

    def forget(self, stages: Iterable[str]) -> None:
        """Forgets stages whose inputs are about to change."""
        for stage in stages:
            self.manifest["stages"].pop(stage, None)
        self._save()

    def remove_backups(self, *names: str) -> None:
        """Deletes what an interrupted stage kept to resume from: checkpoints/<name> and
        checkpoints/<name>_* for each of `names` (the stage and the model it trains; e.g. the
        teacher's head, the race's probes)."""
        root = self.checkpoints()
        if not os.path.isdir(root):
            return
        names = tuple(n for n in names if n)
        for name in os.listdir(root):
            if name in names or name.startswith(tuple(f"{n}_" for n in names)):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _shown(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(none)"
    return "(none)" if value in (None, "") else str(value)


def plan(
    directory: RunDirectory,
    order: Iterable[str],
    selected: Iterable[str],
    inputs_of,
    upstream_of,
    needs_of,
    force: Iterable[str] = (),
) -> list[Decision]:
    """Which of the `selected` stages rerun and why, in `order` (the stage table's).

    A stage reruns when it is forced (`force`: --overwrite, or named in --stages), never
    finished, had its files changed, reads a changed setting or outside file, or consumes a
    stage that reruns (`upstream_of(stage)`: the stages it consumes). `inputs_of(stage)` gives
    its current `StageInputs`; it is only called for a stage whose upstream all stay. A
    selected stage that cannot run without (`needs_of`) an unselected stale stage is a
    `ValueError`: its results would come from other settings or files than today's.
    """
    order, selected, force = list(order), set(selected), set(force)
    decisions: list[Decision] = []
    rerunning: set[str] = set()
    stale: set[str] = set()
    for stage in order:
        consumed = set(upstream_of(stage))
        upstream = [u for u in order if u in consumed and u in rerunning]
        if stage not in selected:
            why: str | None = None
            if upstream or consumed & stale:
                why = "a stage it reads reruns or is stale"
            elif directory.done(stage):
                why = directory.why_stale(stage, inputs_of(stage))  # other settings or files
            if why:
                stale.add(stage)
                decisions.append(Decision(stage, False, why, stale=True))
            continue
        left_stale = sorted(set(needs_of(stage)) & stale, key=order.index)
        if left_stale:
            up = left_stale[0]
            reason = directory.why_stale(up, inputs_of(up)) if directory.done(up) else None
            raise ValueError(
                f"Stage {stage} reads the results of {up}, which are stale"
                f"{f' ({reason})' if reason else ''}. Add {up} to --stages, or run --stages=all."
            )
        if stage in force:
            reason = "asked for"
        elif stage not in directory.manifest["stages"]:
            reason = "not run yet" if stage not in directory.manifest["running"] else "interrupted"
        elif not directory.done(stage):
            reason = "its files changed since it ran"
        elif upstream:
            reason = f"{', '.join(upstream)} rerun{'s' if len(upstream) == 1 else ''}"
        else:
            reason = directory.why_stale(stage, inputs_of(stage))
        if reason is not None:
            rerunning.add(stage)
        decisions.append(Decision(stage, reason is not None, reason or "unchanged"))
    return decisions
