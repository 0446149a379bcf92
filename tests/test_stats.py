"""tfkd.measure.stats against scipy's exact binomial test (an independent computation)."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tfkd.measure import stats


@pytest.mark.parametrize("only_a, only_b, both", [(0, 0, 5), (7, 1, 20), (3, 12, 0), (30, 18, 50)])
def test_mcnemar_exact_is_the_two_sided_binomial_test_on_the_discordant_images(
    only_a, only_b, both
):
    a = np.array([True] * only_a + [False] * only_b + [True] * both + [False] * 4)
    b = np.array([False] * only_a + [True] * only_b + [True] * both + [False] * 4)
    expected = (
        1.0 if only_a + only_b == 0 else scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    )
    assert stats.mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-12)
    assert stats.discordant(a, b) == (only_a, only_b)


def test_paired_difference_reports_the_gain_its_interval_and_p_value():
    rng = np.random.default_rng(0)
    a, b = rng.random(400) < 0.8, rng.random(400) < 0.7
    result = stats.paired_difference(a, b)
    per_image = a.astype(float) - b.astype(float)
    assert result["difference"] == pytest.approx(per_image.mean())
    assert result["standard_error"] == pytest.approx(per_image.std(ddof=1) / np.sqrt(400))
    low, high = result["interval"]
    assert low < result["difference"] < high
    assert high - low == pytest.approx(2 * 1.959964 * result["standard_error"])
    assert result["p_value"] == pytest.approx(stats.mcnemar_exact(a, b))


def test_unpaired_results_are_refused():
    with pytest.raises(ValueError, match="same examples"):
        stats.mcnemar_exact([True, False], [True])


def test_paired_standard_error_against_the_discordant_pair_formula():
    # 200 images: a right and b wrong on 30, b right and a wrong on 12, the rest concordant.
    n, only_a, only_b = 200, 30, 12
    correct_a = np.array([True] * only_a + [False] * only_b + [True] * 100 + [False] * 58)
    correct_b = np.array([False] * only_a + [True] * only_b + [True] * 100 + [False] * 58)
    mean = (only_a - only_b) / n
    variance = (only_a + only_b - n * mean**2) / (n - 1)  # per-image difference, ddof=1
    expected = (variance / n) ** 0.5
    result = stats.paired_difference(correct_a, correct_b)
    assert result["standard_error"] == pytest.approx(expected, rel=1e-12)
    # Concordant images do not count: the same pair with 1,000 more both-right images has the
    # same discordant counts and a smaller error.
    wider = stats.paired_difference(
        np.r_[correct_a, [True] * 1000], np.r_[correct_b, [True] * 1000]
    )
    assert wider["standard_error"] < expected and wider["p_value"] == result["p_value"]
