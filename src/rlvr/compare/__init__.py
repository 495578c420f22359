"""`rlvr compare`: a grid of recipes x seeds, its statistics, and a self-contained HTML report.

    rlvr compare --recipes grpo,dr_grpo,dapo --seeds 3 train.steps=100 eval.samples=4

Every (recipe, seed) run goes to ``DIR/<recipe>/seed<S>/`` (a normal run directory, see
``rlvr.train.trainer.train``). Runs go one after the other, seed-major (every recipe's seed 0, then
every recipe's seed 1, ...), so a grid stopped half-way already holds a like-for-like comparison.
Given an existing ``DIR`` the grid resumes: a finished run (``summary.json`` present) is skipped, an
interrupted one continues from its newest checkpoint, and a run directory whose ``config.toml`` differs
from the config the grid would run now is refused with the differing fields named.

Statistics, per recipe over its finished seeds (values x_1..x_n, one per seed):

    mean  m = (1/n) sum x_i;  sample sd  s = sqrt(sum (x_i - m)^2 / (n - 1))
    95% t-interval: m +- t_{0.975, n-1} s / sqrt(n)

for the final held-out pass@1, pass@k at the largest k, and the pass@1 gain over the base model.

Significance, for each pair of recipes (A, B), Welch's unequal-variance t-test on final pass@1:

    d = m_A - m_B;  se = sqrt(s_A^2 / n_A + s_B^2 / n_B);  t = d / se
    df = se^4 / ((s_A^2 / n_A)^2 / (n_A - 1) + (s_B^2 / n_B)^2 / (n_B - 1))   (Welch-Satterthwaite)
    p = P(|T_df| >= |t|);   95% CI of d: d +- t_{0.975, df} se

with Student's t distribution from scipy.stats (df need not be an integer). Why Welch and not a
permutation test over seeds: with 3 seeds per recipe there are only C(6, 3) = 20 ways to split the 6
values, so the smallest two-sided permutation p-value is 2 / 20 = 0.1 and no difference could ever
reach p < 0.05. Welch's test assumes that a recipe's per-seed pass@1 is roughly normal (plausible:
each is a mean over hundreds of problems and samples) but cannot check it from 3 values; with df
around 2 to 4 the critical |t| is 2.8 to 4.3, so only differences several times larger than the
seed-to-seed spread are flagged, and a non-significant result says little. Holm's step-down
adjustment for the number of pairs is reported beside the raw p-value:

    sort p_(1) <= ... <= p_(m);  p_holm_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))

Outputs: ``DIR/compare.json`` (every number below) and ``DIR/report.html`` (plots embedded as base64
PNG): the recipe table, the pairwise tests, final pass@1 per seed, pass@k curves, learning curves
(mean over seeds with a min-max band), the per-run table, the command and the configs.
"""

from __future__ import annotations

from rlvr.compare.cli import add_compare_parser, run_compare
from rlvr.compare.grid import parse_recipes, parse_seeds, run_grid
from rlvr.compare.report import write_compare
from rlvr.compare.stats import WelchResult, holm, mean_ci, t_cdf, t_ppf, welch_test
from rlvr.compare.summary import CURVE_METRICS, summarize

__all__ = [
    "CURVE_METRICS",
    "WelchResult",
    "add_compare_parser",
    "holm",
    "mean_ci",
    "parse_recipes",
    "parse_seeds",
    "run_compare",
    "run_grid",
    "summarize",
    "t_cdf",
    "t_ppf",
    "welch_test",
    "write_compare",
]
