"""Building the `tf.distribute` strategy a training runs under.

tfkd does no parallelism of its own: training stages build and compile their models in
`strategy.scope()` and Keras' `fit` splits each global batch across the replicas. The Distiller
averages its loss over the global batch (per-replica mean / replicas, summed by the optimizer),
so a distributed step equals a single-device step on the same global batch.

Multi-worker: every worker runs the same program with its own `TF_CONFIG`.
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")

TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\''
)


def _tf_config() -> dict:
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError(
            "A multi-worker strategy needs the cluster in the TF_CONFIG environment "
            f"variable of every worker, e.g. {TF_CONFIG_EXAMPLE} (index 1 on the "
            "second machine)."
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"TF_CONFIG is not valid JSON ({error}). Example: {TF_CONFIG_EXAMPLE}"
        ) from error
    cluster, task = config.get("cluster", {}), config.get("task", {})
    if not cluster.get("worker") and not cluster.get("chief"):
        raise ValueError(f"TF_CONFIG has no workers in its cluster. Example: {TF_CONFIG_EXAMPLE}")
    if task.get("type") not in ("chief", "worker"):
        raise ValueError(
            f"TF_CONFIG task type {task.get('type')!r}: tfkd runs on 'chief' and "
            f"'worker' tasks. Example: {TF_CONFIG_EXAMPLE}"
        )
    members = cluster.get(task["type"], [])
    if not isinstance(task.get("index"), int) or not 0 <= task["index"] < len(members):
        raise ValueError(
            f"TF_CONFIG task index {task.get('index')!r} is not in the cluster's "
            f"{len(members)} {task['type']} address(es)."
        )
    return config


def make(name: str, timeout_seconds: int | None = 600) -> tf.distribute.Strategy:
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
            raise ValueError(
                f"No TPU was found ({error}). Run on a TPU VM or pick the "
                "mirrored or multi_worker strategy."
            ) from error
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy '{name}'. Available: {list(STRATEGIES)}")


def is_distributed(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` mirrors variables (anything but the default strategy)."""
    return isinstance(
        strategy,
        (
            tf.distribute.MirroredStrategy,
            tf.distribute.MultiWorkerMirroredStrategy,
            tf.distribute.TPUStrategy,
        ),
    )


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Workers split batches by position: tfkd's datasets come from memory, not files, so
    tf.data's default attempt to shard by file would only warn and fall back."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def replica_share(count: tf.Tensor, at_least: float = 0.0) -> tf.Tensor:
    """This replica's share of a loss normalised by `count` over its part of the batch (e.g. a
    detector's positive anchors): the loss times its share, summed over the replicas as the
    optimizer sums their gradients (and fit sums their logs), is the loss normalised over the
    global batch, as on one device. `at_least` is the floor the loss puts under its count. Call
    it inside a step; 1 outside a distribution strategy."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tf.constant(1.0)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return tf.math.divide_no_nan(tf.maximum(count, at_least), tf.maximum(total, at_least))


def settle_replica_statistics(model) -> None:
    """Sets each per-replica variable of `model` (batch normalisation's moving statistics: each
    replica averages those of its own part of the batches) to its mean over the replicas, on
    every replica. The trained model then predicts across the replicas as its saved copy, which
    holds the mean, predicts on one device. Call it in cross-replica context (the strategy's
    scope, outside a step)."""
    for variable in model.variables:
        if variable.synchronization == tf.VariableSynchronization.ON_READ:
            variable.assign(variable.read_value())
