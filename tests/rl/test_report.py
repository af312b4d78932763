"""rliable-style aggregation: IQM over run scores (mean return of each run's evaluation episodes) and
percentile-bootstrap confidence intervals that resample runs."""

import numpy as np
import pytest
from scipy.stats import trim_mean

from sparta.rl.report import bootstrap_ci, iqm, run_scores, score_iqm


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 13, 100])
def test_iqm_is_the_25_percent_trimmed_mean(n):
    x = np.random.default_rng(n).normal(size=n) * 10
    assert iqm(x) == pytest.approx(trim_mean(x, 0.25))


def test_scores_are_run_means_not_pooled_episodes():
    # one run with a wild episode: pooled episodes would trim it away, run scores keep its mean
    scores = np.array([[10.0, 10, 10, 10], [12, 12, 12, 12], [0, 0, 0, 400], [11, 11, 11, 11]])
    np.testing.assert_allclose(run_scores(scores), [10, 12, 100, 11])
    assert score_iqm(scores) == pytest.approx(trim_mean([10, 12, 100, 11], 0.25))  # = mean(11, 12)
    assert score_iqm(scores) != pytest.approx(iqm(scores))


def test_bootstrap_ci_brackets_the_estimate_within_the_run_range():
    rng = np.random.default_rng(0)
    scores = rng.normal(100, 20, size=(10, 5))
    lo, hi = bootstrap_ci(scores, reps=500)
    runs = run_scores(scores)
    assert runs.min() <= lo < score_iqm(scores) < hi <= runs.max()
    assert bootstrap_ci(scores, reps=500) == (lo, hi)  # seeded
    assert bootstrap_ci(np.full((3, 4), 7.0), reps=50) == (7.0, 7.0)
