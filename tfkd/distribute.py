"""Which `tf.distribute` strategy a run uses, and who writes its artifacts.

tfkd does no parallelism of its own: training stages build and compile their models in
`strategy.scope()` and Keras' `fit` splits each global batch across the replicas. The Distiller
averages its loss over the global batch (per-replica mean / replicas, summed by the optimizer),
so a distributed step equals a single-device step on the same global batch.

Multi-worker: every worker runs the same program with its own `TF_CONFIG`. Only the chief
writes the run directory; the other workers read it (it must be on a filesystem they all see,
as Keras' BackupAndRestore requires) and write their copies of checkpoints and models to
temporary directories of their own.
"""

import json
import os
import shutil
from typing import Optional

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")

TF_CONFIG_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}\'')


def _tf_config() -> dict:
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError("--strategy=multi_worker needs the cluster in the TF_CONFIG environment "
                         f"variable of every worker, e.g. {TF_CONFIG_EXAMPLE} (index 1 on the "
                         "second machine).")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}). Example: "
                         f"{TF_CONFIG_EXAMPLE}") from error
    cluster, task = config.get("cluster", {}), config.get("task", {})
    if not cluster.get("worker") and not cluster.get("chief"):
        raise ValueError(f"TF_CONFIG has no workers in its cluster. Example: {TF_CONFIG_EXAMPLE}")
    if task.get("type") not in ("chief", "worker"):
        raise ValueError(f"TF_CONFIG task type {task.get('type')!r}: tfkd runs on 'chief' and "
                         f"'worker' tasks. Example: {TF_CONFIG_EXAMPLE}")
    members = cluster.get(task["type"], [])
    if not isinstance(task.get("index"), int) or not 0 <= task["index"] < len(members):
        raise ValueError(f"TF_CONFIG task index {task.get('index')!r} is not in the cluster's "
                         f"{len(members)} {task['type']} address(es).")
    return config


def make(name: str, timeout_seconds: Optional[int] = 600) -> tf.distribute.Strategy:
    """The strategy called `name` (one of `STRATEGIES`).

    Must be called before the program runs any other TensorFlow op (a multi-worker strategy
    configures the runtime). `timeout_seconds` bounds a collective waiting for a dead worker,
    so the others fail (and can be restarted) instead of hanging.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        _tf_config()
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as error:
            raise ValueError(f"--strategy=tpu found no TPU ({error}). Run on a TPU VM or pick "
                             "--strategy=mirrored/multi_worker.") from error
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy '{name}'. Available: {list(STRATEGIES)}")


def is_distributed(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` mirrors variables (anything but the default strategy)."""
    return isinstance(strategy, (tf.distribute.MirroredStrategy,
                                 tf.distribute.MultiWorkerMirroredStrategy,
                                 tf.distribute.TPUStrategy))


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


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Workers split batches by position: tfkd's datasets come from memory, not files, so
    tf.data's default attempt to shard by file would only warn and fall back."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def scratch_dir(out_dir: str, strategy: tf.distribute.Strategy) -> str:
    """Where a non-chief worker writes what the chief writes into `out_dir`."""
    return os.path.join(out_dir, f".scratch_{worker_label(strategy)}")


def remove_scratch(out_dir: str, strategy: tf.distribute.Strategy) -> None:
    if not is_chief(strategy):
        shutil.rmtree(scratch_dir(out_dir, strategy), ignore_errors=True)
