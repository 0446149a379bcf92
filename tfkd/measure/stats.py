"""Paired statistics for verdicts on the same examples: which of two models is better, and
whether that is beyond noise.

Two models scored on the same images disagree on some of them; only those discordant images
carry evidence. McNemar's exact test asks whether the split of discordant images between the
two is more lopsided than a fair coin would make it (a two-sided binomial test at p = 1/2).
"""

import math

import numpy as np

# The significance level of tfkd's verdicts (selection, teacher check, calibration).
DEFAULT_ALPHA = 0.05


def discordant(a_correct, b_correct) -> tuple[int, int]:
    """Images only `a` gets right, and images only `b` gets right."""
    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    if a.shape != b.shape:
        raise ValueError(f"Paired results need the same examples: shapes {a.shape} and {b.shape}.")
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def mcnemar_exact(a_correct, b_correct) -> float:
    """Two-sided p-value of McNemar's exact test that `a` and `b` are equally accurate."""
    only_a, only_b = discordant(a_correct, b_correct)
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def paired_difference(a_correct, b_correct, z: float = 1.959964) -> dict:
    """Accuracy of `a` minus `b` with its paired standard error, a normal 95% interval and
    McNemar's exact p-value."""
    a, b = np.asarray(a_correct, float), np.asarray(b_correct, float)
    only_a, only_b = discordant(a_correct, b_correct)
    n = a.size
    difference = float(np.mean(a) - np.mean(b))
    per_image = a - b
    standard_error = float(np.std(per_image, ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return {
        "difference": difference,
        "standard_error": standard_error,
        "interval": [difference - z * standard_error, difference + z * standard_error],
        "p_value": mcnemar_exact(a_correct, b_correct),
        "only_a": only_a,
        "only_b": only_b,
        "images": int(n),
    }


__all__ = ["DEFAULT_ALPHA", "discordant", "mcnemar_exact", "paired_difference"]
