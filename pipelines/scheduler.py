"""Runs the selected stages of a run in table order, reusing those the plan keeps."""

import dataclasses
import datetime
import errno
import gc
import hashlib
import json
import os
import signal
import sys
import time

import tensorflow as tf
from absl import flags, logging

import tfkd
from pipelines import config as config_lib
from pipelines import console, run, workers
from pipelines import stages as stages_lib
from pipelines.config import Config
from pipelines.context import Context
from pipelines.detection import stages as detection_stages
from pipelines.detection.context import DetectionContext
from pipelines.stages import STAGE_NAMES, STAGES
from tfkd import files
from tfkd.distill import training
from tfkd.keras import keras
from tfkd.measure import benchmark, device


def _check_feature_layers(ctx: Context) -> None:
    """Names in --features must exist in the models: checked before any training."""
    config = ctx.config
    if not config.feature_pairs:
        return
    teacher = ctx.teacher_file if config.teacher_is_file else ctx.build(config.teacher)
    tfkd.distill.features.FeatureTaps(teacher, ctx.build(config.student), config.feature_pairs)


def _check_raw_byte_input(ctx: Context) -> None:
    """A uint8 model takes raw bytes only under a normalisation one quantization can express."""
    if "int8_io_uint8" in ctx.config.modes:
        try:
            tfkd.export.raw_byte_quantization(ctx.splits.preprocessing)
        except ValueError as error:
            raise ValueError(f"--modes={','.join(ctx.config.modes)}: {error}") from error


def _check_device(config: Config, selected: list[str]) -> None:
    """The phone of the device stage is reachable, and --benchmark_binary exists, before any
    training: that stage runs last."""
    if stages_lib.DEVICE not in selected:
        return
    try:
        device.connect(config.serial)
    except device.DeviceError as error:
        raise ValueError(f"--serial={config.serial}: {error}") from error
    if config.benchmark_binary and not os.path.isfile(config.benchmark_binary):
        raise ValueError(
            f"--benchmark_binary={config.benchmark_binary} does not exist. Give the host path "
            "of Android's benchmark_model, or leave it out to measure with the demo app."
        )


def execute(config: Config, strategy: tf.distribute.Strategy | None = None) -> dict:
    """Runs the selected stages and returns every finished stage's metrics by stage name.

    Training stages run in `strategy`'s scope (made from --strategy unless given). In a
    multi-worker run, non-chief workers stop after the training stages: the chief exports,
    verifies, benchmarks and reports alone. Everything logged goes to RUN/logs/run.log."""
    # A multi-worker strategy must exist before any other op runs.
    strategy = strategy or tfkd.distill.distribute.make(config.strategy, config.collective_timeout)
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    # Everything is checked before anything is written: a failed start changes nothing.
    selected = stages_lib.selected(config.stages, config.serial)
    run.check_location(config.out_dir)
    _check_device(config, selected)
    ctx = _context(config, strategy)
    if isinstance(ctx, Context):
        _check_feature_layers(ctx)
        _check_raw_byte_input(ctx)
    for stage in STAGES:
        missing = [n for n in stage.needs if n not in selected and not ctx.directory.done(n)]
        if stage.name in selected and missing:
            raise ValueError(
                f"Stage {stage.name} needs {missing}: run them first or add them to --stages."
            )
    decisions = plan(config, ctx.directory, selected)
    if not ctx.chief:
        return _run_stages(ctx, decisions)
    with run.RunLock(config.out_dir), console.RunLog(ctx.directory.file(run.RunLayout.RUN_LOG)):
        _announce(ctx, decisions)
        stale = ctx.directory.remove_stale_temporaries()
        if stale:
            logging.info(
                "Removed %d temporary file(s) an interrupted run left: %s", len(stale), stale
            )
        files.write_text(
            ctx.directory.file(run.RunLayout.CONFIG),
            json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True),
        )
        return _run_stages(ctx, decisions)


def _context(config: Config, strategy: tf.distribute.Strategy) -> Context | DetectionContext:
    """The run's task (`Config.task`) decides what its stages share and what their bodies do;
    the stage table, the run directory and this scheduler are the same for every task."""
    if config.task == config_lib.DETECTION:
        return DetectionContext(config, strategy)
    return Context(config, strategy)


def _body(ctx: Context | DetectionContext, stage):
    return detection_stages.BODIES[stage.name] if isinstance(ctx, DetectionContext) else stage.fn


def _outside_files(config: Config, stage: str) -> dict:
    """Hashes of the files the settings `stage` reads name (a teacher or student file, weights):
    a changed file reruns the stages that used it. A directory (a SavedModel teacher) is
    hashed file by file."""
    hashes = {}
    for name, value in config.read_by(stage).items():
        if not isinstance(value, str) or not value or name == "dataset":
            continue
        if os.path.isfile(value):
            hashes[name] = files.sha256_file(value)
        elif os.path.isdir(value) and name == "teacher":
            listed = sorted(os.path.join(d, n) for d, _, names in os.walk(value) for n in names)
            text = "".join(f"{os.path.relpath(p, value)}:{files.sha256_file(p)}" for p in listed)
            hashes[name] = hashlib.sha256(text.encode()).hexdigest()
    return hashes


def stage_inputs(config: Config, directory: run.RunDirectory, stage: str) -> run.StageInputs:
    """What `stage` would run from now: its settings, outside files and upstream results."""
    return run.StageInputs(
        settings=config.read_by(stage),
        files=_outside_files(config, stage),
        upstream={
            u: directory.outputs_digest(u)
            for u in stages_lib.BY_NAME[stage].upstream
            if directory.done(u)
        },
    )


def plan(config: Config, directory: run.RunDirectory, selected: list[str]) -> list[run.Decision]:
    """The selected stages that rerun and why (`run.plan`). --overwrite reruns every selected
    stage; stages named in --stages run again (not in a run continuing in a fresh process,
    --isolate_stages)."""
    named = tuple(config.stages) != (stages_lib.ALL,) and not _continuing()
    force = selected if config.overwrite or named else []
    with directory.hashing_once():
        return run.plan(
            directory,
            STAGE_NAMES,
            selected,
            lambda stage: stage_inputs(config, directory, stage),
            lambda stage: stages_lib.BY_NAME[stage].upstream,
            lambda stage: stages_lib.BY_NAME[stage].needs,
            force,
        )


def _announce(ctx: Context | DetectionContext, decisions: list[run.Decision]) -> None:
    """Before the first stage: which stages are reused and which rerun, and why (said only for a
    run directory that holds earlier stages)."""
    if _continuing() or not ctx.directory.manifest["stages"]:
        return
    reused = [d.stage for d in decisions if not d.rerun and not d.stale]
    lines = [f"Reused, unchanged: {', '.join(reused)}"] if reused else []
    lines += [f"Reruns: {d.stage} ({d.reason})" for d in decisions if d.rerun]
    lines += [
        f"Left out, stale until it runs again: {d.stage} ({d.reason})"
        for d in decisions
        if d.stale and ctx.directory.done(d.stage)
    ]
    for line in lines:
        logging.info("%s", line)
        print(line, flush=True)


# Set in the environment of a run that re-executed itself (--isolate_stages): it continues the
# run, so stages finished by the earlier images are skipped even when --stages names them.
CONTINUING = "TFKD_CONTINUING_RUN"


class ContinueInFreshProcess(Exception):
    """Raised after a stage under --isolate_stages: the program re-executes itself to run the
    remaining stages, giving back all the memory this process holds."""


def _continuing() -> bool:
    return os.environ.get(CONTINUING) == "1"


# When the command began, kept in the environment of the fresh processes it continues in.
STARTED = "TFKD_RUN_STARTED"


def _command_started() -> datetime.datetime:
    """When this command began: now, or, in a process it continues in, its first process's
    time."""
    if _continuing() and STARTED in os.environ:
        return datetime.datetime.fromisoformat(os.environ[STARTED])
    started = datetime.datetime.now(datetime.UTC)
    os.environ[STARTED] = started.isoformat()
    return started


def _leaves_memory(stage) -> bool:
    """Stages after which a fresh process pays off: training (graphs, optimizer state, the
    allocator's high-water mark) and export (the converter's)."""
    return bool(stage.model) or stage.name == "export"


def _describe(ctx: Context | DetectionContext, stage) -> str:
    """A stage's banner text: what it does and, for training, on what."""
    if isinstance(ctx, DetectionContext):
        return ctx.describe(stage)
    if not stage.model:
        return stage.what
    config = ctx.config
    teacher = stage.model == "teacher"
    architecture = config.teacher if teacher else config.student
    size = (ctx.teacher_splits if teacher else ctx.splits).preprocessing.image_size
    sizes = ctx.splits.sizes
    labeled = sizes.get("labeled", sizes["train"])
    # The teacher and the student alone learn from the labeled images only; a teacher with a
    # pool of its own (--teacher_pool) from that pool.
    images = (
        f"{ctx.teacher_pool.sizes['train']:,} training images of its own (--teacher_pool)"
        if stage.name == "teacher" and ctx.teacher_pool is not None
        else f"{sizes['train']:,} training images"
        if labeled == sizes["train"]
        else f"{labeled:,} labeled training images"
        if stage.name in ("teacher", "baseline")
        else f"{sizes['train']:,} training images ({labeled:,} labeled)"
    )
    if config.mixing is not None and stage.name in ("student", "qad"):
        images += f", {config.mix_fraction:.0%} in {config.augment} views"
    return (
        f"{stage.what}: {architecture} at {size[0]}x{size[1]}, {images}, "
        f"{getattr(config, stage.epochs)} epoch(s)"
    )


def _run_stage(ctx: Context | DetectionContext, stage) -> tuple[list[str], dict]:
    body = _body(ctx, stage)
    if not stage.trains:
        return body(ctx)
    mixed = ctx.config.use_mixed_precision and stage.mixed_precision
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    try:
        with ctx.strategy.scope():
            return body(ctx)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _run_stages(ctx: Context | DetectionContext, decisions: list[run.Decision]) -> dict:
    config, strategy = ctx.config, ctx.strategy
    distributed = tfkd.distill.distribute.is_distributed(strategy)
    heavy_stage_ran = False
    # Results of stages not run here that are stale are not read as if they were current.
    ctx.directory.forget([d.stage for d in decisions if d.stale])
    decisions = [d for d in decisions if not d.stale]
    for index, decision in enumerate(decisions):
        stage = stages_lib.BY_NAME[decision.stage]
        position = (index + 1, len(decisions))
        if not decision.rerun:
            logging.info("Stage %s: finished earlier, unchanged; reused.", stage.name)
            if not _continuing():
                console.banner(*position, stage.name, "finished earlier, unchanged; reused")
            continue
        if heavy_stage_ran and config.isolate_stages and not distributed and ctx.chief:
            logging.info(
                "Continuing the run in a fresh process from stage %s (--isolate_stages).",
                stage.name,
            )
            raise ContinueInFreshProcess()
        if not stage.trains and distributed:
            if not ctx.chief:
                logging.info(
                    "Worker %s: training stages done; the chief writes the rest.",
                    workers.worker_label(strategy),
                )
                break
            # Export and measurement run on this process alone, on plain (undistributed)
            # copies of the models, read back from the run directory.
            ctx.drop_models()
            distributed = False
        # A stage that runs is unfinished until it records again, and so is every stage that
        # consumes its results.
        ctx.directory.forget(stages_lib.downstream(stage.name))
        inputs = stage_inputs(config, ctx.directory, stage.name)
        if not ctx.directory.start(stage.name, inputs) and ctx.chief:
            # Backups an interrupted attempt left were made from other settings or inputs.
            ctx.directory.remove_backups(stage.name, stage.model)
        logging.info("Stage %s: running (%s).", stage.name, decision.reason)
        console.banner(*position, stage.name, _describe(ctx, stage))
        started = time.time()
        benchmark.reset_peak_rss()
        try:
            with config_lib.reading() as reads:
                outputs, metrics = _run_stage(ctx, stage)
        except training.NonFiniteLoss as error:
            raise ValueError(
                f"Stage {stage.name}: {error}. Lower --learning_rate (or look for broken "
                "inputs) and rerun the same command: the stages the change affects run again, "
                "the others are reused."
            ) from error
        metrics["seconds"] = time.time() - started
        # The stage's own peak: where a run's memory goes, stage by stage.
        metrics["peak_rss_mb"] = benchmark.peak_rss_bytes() / 2**20
        ctx.directory.record(stage.name, outputs, metrics, inputs, reads)
        heavy_stage_ran = heavy_stage_ran or _leaves_memory(stage)
        if stage.trains and not distributed:
            # Later stages read what they need back from the run directory: letting go of this
            # stage's models and graphs keeps a run's memory near its largest stage's.
            ctx.drop_models()
            keras.backend.clear_session()
            gc.collect()
    workers.remove_scratch(config.out_dir, strategy)
    return {s: ctx.directory.metrics(s) for s in STAGE_NAMES if ctx.directory.done(s)}


def _reexecute():
    """Replaces this process with a fresh one running the same command, which continues the run
    (same pid and terminal; the run's lock was released on the way out)."""
    console.restore_terminal()
    sys.stdout.flush()
    os.environ[CONTINUING] = "1"
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _no_space(config: Config) -> str:
    return (
        f"No space left on the device of --out_dir={config.out_dir}. Files are written "
        "whole or not at all, so earlier artifacts are intact: free some space (or pick "
        "another --out_dir) and rerun; finished stages are skipped."
    )


def _exit(message: str, status: int):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `kill`, a batch scheduler or a container runtime sends), ended as Ctrl-C
    is: the epoch in progress is lost, everything finished is kept."""


def _resume_hint(config: Config, started: datetime.datetime) -> str:
    """How to go on with a run whose command, `started` then, was interrupted. The same command
    does, unless it names stages and finished some of them: --stages runs what it names again,
    so the hint names the others."""
    progress = f"the training in progress continues from its last epoch in {config.out_dir}."
    same = f"Rerun the same command to resume: finished stages are skipped and {progress}"
    if config.stages == (stages_lib.ALL,):
        return same
    directory = run.RunDirectory(config.out_dir, writable=False)
    recorded = directory.manifest["stages"]
    named = stages_lib.selected(config.stages, config.serial)
    left = [
        s
        for s in named
        if not (
            directory.done(s)
            and datetime.datetime.fromisoformat(recorded[s]["finished"]) >= started
        )
    ]
    if left == named:
        return same
    return (
        f"Resume with --stages={','.join(left)} in place of --stages="
        f"{','.join(config.stages)} (which runs every stage it names again): {progress}"
    )


def _terminate(signum, frame):
    del signum, frame
    raise Terminated()


def run_from_flags(**overrides) -> tuple[Config, dict, tf.distribute.Strategy]:
    """For the programs' `main`s: the `Config` of the parsed flags (with `overrides`), run.

    Every expected failure ends the process with one line naming it: status 2 for bad settings,
    data, files or devices, 3 for a cluster that lost a worker (restart every worker: the run
    resumes)."""
    started = _command_started()
    if not flags.FLAGS["verbosity"].present:
        console.quiet_terminal()
    try:
        config = config_lib.from_flags(**overrides)
    except (ValueError, TypeError) as error:
        _exit(str(error), 2)
    strategy = None
    signal.signal(signal.SIGTERM, _terminate)
    # What the imports made lives as long as the process: frozen, it is left out of the
    # collections after each training stage, which then go through what the run made alone
    # (about 0.7 s of a 12 s digits run).
    gc.collect()
    gc.freeze()
    try:
        strategy = tfkd.distill.distribute.make(config.strategy, config.collective_timeout)
        results = execute(config, strategy)
    except ContinueInFreshProcess:
        _reexecute()
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated)
        _exit(
            f"{'terminated (SIGTERM)' if terminated else 'interrupted'}. "
            + _resume_hint(config, started),
            143 if terminated else 130,
        )
    except OSError as error:
        if error.errno == errno.ENOSPC:
            _exit(_no_space(config), 2)
        _exit(str(error), 2)
    except (ValueError, device.DeviceError) as error:
        _exit(str(error), 2)
    except tf.errors.OpError as error:
        if "No space left" in (error.message or ""):
            _exit(_no_space(config), 2)
        if strategy is None or not tfkd.distill.distribute.is_distributed(strategy):
            raise
        _exit(
            f"a worker of the cluster failed or could not be reached ({error.message}). "
            "Restart every worker with the same command: finished stages are skipped and the "
            "interrupted one resumes from its last backup.",
            3,
        )
    return config, results, strategy
