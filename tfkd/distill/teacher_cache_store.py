"""Where a teacher cache's logits are kept on disk: one `.npy` array (views, examples, classes)
and the key that vouches for it, written last so that logits without a matching key are never
read; read back as an array, or as a memory map past a size limit."""

import json
import os
from collections.abc import Callable

import numpy as np
from absl import logging

from tfkd import files

LOGITS_FILE = "teacher_logits.npy"


KEY_FILE = "teacher_logits.json"


def read(directory: str, key: dict, in_memory_limit: int) -> np.ndarray | None:
    key_path, logits_path = (
        os.path.join(directory, KEY_FILE),
        os.path.join(directory, LOGITS_FILE),
    )
    if not (os.path.exists(key_path) and os.path.exists(logits_path)):
        return None
    with open(key_path, encoding="utf-8") as handle:
        stored = json.load(handle)
    if stored != key:
        changed = sorted(k for k in set(stored) | set(key) if stored.get(k) != key.get(k))
        logging.info(
            "Teacher cache in %s is stale (changed: %s); rebuilding.", directory, ", ".join(changed)
        )
        return None
    logits = open_logits(logits_path, in_memory_limit)
    if logits.shape != shape(key):
        logging.warning(
            "Teacher cache %s has shape %s, expected %s; rebuilding.",
            logits_path,
            logits.shape,
            shape(key),
        )
        return None
    return logits


def open_logits(logits_path: str, in_memory_limit: int) -> np.ndarray:
    """The stored logits: a memory map when larger than `in_memory_limit`, else an array."""
    logits = np.load(logits_path, mmap_mode="r")
    return np.asarray(logits) if logits.nbytes <= in_memory_limit else logits


def shape(key: dict) -> tuple[int, int, int]:
    """The logits' shape a cache key describes: (views, examples, classes)."""
    return key["views"], key["examples"], key["classes"]


def write(directory: str, fill: Callable, key: dict, in_memory_limit: int) -> np.ndarray:
    """Logits of `key`'s shape filled by `fill` straight into `directory`, then the key; returns
    them as `open_logits` reads them."""
    # A key left from an earlier cache must not vouch for the logits written below.
    key_path = os.path.join(directory, KEY_FILE)
    if os.path.exists(key_path):
        os.remove(key_path)
    logits_path = os.path.join(directory, LOGITS_FILE)
    with files.atomic_path(logits_path) as tmp:
        # Written straight to disk: a large set's logits need not fit in memory.
        logits = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape(key))
        fill(logits)
        logits.flush()
        del logits
    # The key is written last: a cache without a matching key is never read.
    files.write_text(key_path, json.dumps(key, indent=2, sort_keys=True))
    return open_logits(logits_path, in_memory_limit)
