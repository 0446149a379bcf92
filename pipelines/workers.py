"""Who writes what in a multi-worker run.

Every worker runs the same program with its own `TF_CONFIG`. Only the chief writes the run
directory; the other workers read it (it must be on a filesystem they all see, as Keras'
BackupAndRestore requires) and write their copies of checkpoints and models to scratch
directories of their own, removed at the end.
"""

import os
import shutil

import tensorflow as tf


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's artifacts (always, except non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):  # None: a single local worker without TF_CONFIG
        return True
    has_chief = bool(resolver.cluster_spec().as_dict().get("chief"))
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_label(strategy: tf.distribute.Strategy) -> str:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return "local"
    return f"{resolver.task_type}{resolver.task_id}"


def scratch_dir(out_dir: str, strategy: tf.distribute.Strategy) -> str:
    """Where a non-chief worker writes what the chief writes into `out_dir`."""
    return os.path.join(out_dir, f".scratch_{worker_label(strategy)}")


def remove_scratch(out_dir: str, strategy: tf.distribute.Strategy) -> None:
    if not is_chief(strategy):
        shutil.rmtree(scratch_dir(out_dir, strategy), ignore_errors=True)
