"""The trial side of a search: each trial's flags from the base run and a point of the space,
running the base run in its own process, and reading a run's objectives back through the run
directory (a trial's process, `pipelines/search/trial_run.py`, uses them)."""

import dataclasses
import json
import os

from pipelines import config as config_lib
from pipelines import run as run_lib
from pipelines import stages as stages_lib
from pipelines.config import Config
from pipelines.search import report as search_report
from pipelines.search import space, tasks
from pipelines.search.trainable import Layout, TrialFailed, last_error, run_program
from tfkd import export, files

EXPERIMENT = "search"
# With the teacher cache off in the base flags the trials still share the teacher's logits,
# over this many augmented views when the base flags augment (one view otherwise).
SHARED_CACHE_VIEWS = 4


def shared_teacher(base: Config, layout: Layout) -> str:
    """The teacher every trial uses: the base run's trained teacher, or the base flags' file."""
    if base.teacher_is_file:
        return os.path.abspath(base.teacher)
    return run_lib.RunLayout(layout.base).file(run_lib.RunLayout.model_files("teacher")[0])


def calibrated_settings(base: Config, layout: Layout) -> dict:
    """The distillation settings the base run's --loss=auto chose, as flags for trials (which
    have no student alone to calibrate against); nothing when the base named its loss."""
    if not base.calibrated:
        return {}
    chosen = run_lib.RunDirectory(layout.base, writable=False).metrics("student")["calibration"]
    return dict(
        loss=chosen["loss"],
        loss_params=tuple(f"{k}={v}" for k, v in sorted(chosen["params"].items())),
        temperature=chosen["temperature"],
        student_loss_weight=chosen["student_loss_weight"],
    )


def trial_overrides(base: Config, layout: Layout) -> dict:
    """What every trial changes besides its point: the shared teacher (and a classifier's
    logits), the stages a search needs (no student alone: the search compares trials; no
    teacher file: the base run has it), one thread count."""
    overrides = dict(
        teacher=shared_teacher(base, layout),
        teacher_weights="",
        select="distilled",
        export_teacher=False,
        stages=tuple(s for s in stages_lib.selected(("all",), base.serial) if s != "baseline"),
        threads=base.threads[:1],
        overwrite=False,
    )
    if base.task == config_lib.CLASSIFICATION:
        # A detector's dense predictions are not cached (docs/detection.md): its trials run
        # the shared teacher in each step.
        overrides.update(
            teacher_cache="disk",
            teacher_cache_views=base.teacher_cache_views
            if base.teacher_cache != "off"
            else (SHARED_CACHE_VIEWS if base.augmentation else 1),
        )
    return overrides


def teacher_input_size(layout: Layout) -> tuple[int, int]:
    """The shared teacher's input (height, width), from the base run's model card."""
    card = export.read_card(run_lib.RunLayout(layout.base).export_dir())
    shape = card["variants"]["teacher_float32"]["input"]["shape"]
    return int(shape[1]), int(shape[2])


def shipped_variant(card: dict, mode: str) -> str:
    """The card entry a trial ships in `mode`: its QAD student when there is one."""
    for name in (f"student_qad_{mode}", f"student_{mode}"):
        if name in card["variants"]:
            return name
    raise ValueError(f"No {mode} student in the model card: the export stage did not write it.")


def objectives_of(run_dir: str, config: Config, mode: str) -> dict:
    """The measured objectives of the `mode` file a run shipped."""
    tflite = run_lib.RunLayout(run_dir).export_dir()
    card = export.read_card(tflite)
    name = shipped_variant(card, mode)
    entry = card["variants"][name]
    metric = tasks.quality(config)
    drop = run_lib.RunDirectory(run_dir, writable=False).metrics("verify")["drops"].get(name, 0.0)
    if drop > config.max_drop_points:
        raise TrialFailed(
            f"{name} lost {drop:.2f} {search_report.QUALITY_WORDS[metric]} points against its "
            f"float student (the parity gate allows --max_drop_points={config.max_drop_points:g})"
        )
    threads = str(config.threads[0])
    if config.serial:
        measured = _read_json(run_lib.RunLayout(run_dir).file(run_lib.RunLayout.DEVICE_BENCHMARK))[
            "variants"
        ]
    else:
        measured = _read_json(run_lib.RunLayout(run_dir).file(run_lib.RunLayout.HOST_BENCHMARK))
    latency = measured[name][threads]["latency"]
    # A phone's benchmark_model may report no median; its mean stands in.
    p50 = latency["p50_ms"] if latency["p50_ms"] is not None else latency["mean_ms"]
    return {
        metric: tasks.quality_in_card(entry, metric),
        "latency_ms": p50,
        "size_kb": entry["size_bytes"] / 1024,
        "file": os.path.join(tflite, entry["file"]),
        "variant": name,
    }


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def unfinished(config: Config) -> list[str]:
    """The stages of `config` its run directory has not finished (a killed search's runs go on
    from there)."""
    directory = run_lib.RunDirectory(config.out_dir, writable=False)
    return [s for s in stages_lib.selected(config.stages, config.serial) if not directory.done(s)]


def write_flags(config: Config, flagfile: str) -> str:
    """Writes `config` as the flags file that reruns it alone (`python -m pipelines.distill`);
    returns the file's text."""
    text = "\n".join(config_lib.to_flags(config)) + "\n"
    files.write_text(flagfile, text)
    return text


def run_pipeline(config: Config, flagfile: str, log_path: str, cpus: int) -> None:
    """One pipeline run in its own process (its memory and TensorFlow state end with it); its
    flags file reruns it alone. A run that finished earlier is not run again."""
    write_flags(config, flagfile)
    stages = unfinished(config)
    if not stages:
        return
    status = run_program(
        "pipelines.distill",
        [f"--flagfile={flagfile}", f"--stages={','.join(stages)}"],
        log_path,
        cpus,
    )
    # Status 1: the parity gate failed for some file; the caller checks the one it ships.
    if status not in (0, 1):
        raise TrialFailed(last_error(log_path) or f"exit status {status} (see {log_path})")


def trial_config(base: Config, point: dict, layout: Layout, name: str) -> Config:
    """The run of trial `name`: the base flags with its point, the shared teacher and logits."""
    settings = {k: v for k, v in calibrated_settings(base, layout).items() if k not in point}
    if "loss" in point:  # the point's own loss keeps the paper's parameters unless searched
        settings.pop("loss_params", None)
    config = space.trial_config(
        dataclasses.replace(base, **settings) if settings else base,
        point,
        out_dir=layout.trial(name),
        **trial_overrides(base, layout),
    )
    if base.task != config_lib.CLASSIFICATION:
        return config  # a detector's teacher takes the student's input and is not cached
    config = dataclasses.replace(config, teacher_cache_dir=layout.cache(config.image_size))
    if config.image_size:
        # The shared teacher keeps its own resolution whatever size the student searches.
        config = dataclasses.replace(config, teacher_image_size=teacher_input_size(layout))
    return config
