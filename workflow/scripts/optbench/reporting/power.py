"""What the planned tests can detect at all: the smallest p-value each family
of tests can reach with the evaluation seeds, after its multiplicity correction.

With few seeds a paired rank test has a floor. The smallest two-sided p-value
of the exact Wilcoxon signed-rank test on n pairs is reached when every pair
has the same sign: the statistic is at the end of its null distribution,
whose 2^n sign patterns are equally likely, so p = 2 / 2^n. The exact sign
test (``scipy.stats.binomtest`` two-sided, n of n wins) and the exhaustive
permutation Wilcoxon (2^n sign patterns) have the same floor, so the floor
does not depend on which of them ``comparison.paired_test`` picks. Beyond 50
pairs ``paired_test`` uses the normal approximation, whose floor is
2 * (1 - Phi(z)) with z = (n(n+1)/4) / sqrt(n(n+1)(2n+1)/24).

Holm multiplies the smallest p-value of a family of m tests by m (and the
others by less), so the smallest adjusted p-value a family can show is
min(1, m * floor). A difference can be significant only where that is below
the level (``p < alpha``, the rule of ``comparison.ranking_table``); where it
is not, ``seeds_needed`` is the smallest n at which it would be.

Families (``families_for``), as the analysis tests them:

- ``pairwise``: per (problem, loss), every pair of its k optimizers, Holm
  over the k(k-1)/2 pairs (``pairwise.tsv``, the leaderboard's ranks);
- ``baseline``: per (problem, loss), each optimizer against the baseline on
  the held-out loss, one uncorrected test each (``baseline.tsv``);
- ``tuning_gain``: per (problem, loss, optimizer), tuned against one-shot,
  one uncorrected test each (``tuning_gain.tsv``; only where a sweep exists);
- ``friedman``: across the b (problem, loss) blocks with k optimizers, the
  chi-square approximation scipy uses: its largest statistic, b(k - 1), is
  reached when every block ranks the optimizers alike, so the floor is the
  chi-square(k - 1) tail there (``friedman.tsv``; needs k >= 3 and b >= 2).

Standard library only: the plan-time summary (every Snakemake invocation,
``check_config.py``) prints these lines before anything runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.05  # as comparison.ALPHA (that module imports scipy; this one must not)
EXACT_LIMIT = 50  # paired_test's exact / permutation Wilcoxon up to this many pairs
SEARCH_LIMIT = 10_000  # seeds_needed gives up beyond this (NaN)

COLUMNS = [
    "family",
    "problem",
    "loss",
    "test",
    "correction",
    "n",
    "n_tests",
    "alpha",
    "min_p",
    "min_p_adjusted",
    "can_be_significant",
    "n_needed",
    "note",
]


def paired_floor(n: int) -> float:
    """Smallest two-sided p-value of ``comparison.paired_test`` on n nonzero pairs."""
    if n < 1:
        return 1.0
    if n <= EXACT_LIMIT:
        return min(1.0, 2.0 / 2.0**n)
    mean = n * (n + 1) / 4.0
    sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
    return math.erfc(mean / sd / math.sqrt(2.0))  # 2 * (1 - Phi(z))


def chi2_sf(x: float, dof: int) -> float:
    """Upper tail of the chi-square distribution with an integer ``dof`` >= 1
    (closed forms of the regularised upper incomplete gamma function)."""
    if x <= 0:
        return 1.0
    half = x / 2.0
    if dof % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, dof // 2):
            term *= half / i
            total += term
        return math.exp(-half) * total
    total = math.erfc(math.sqrt(half))
    term = math.sqrt(half) * math.exp(-half) / math.gamma(1.5)
    for i in range(1, (dof + 1) // 2):
        total += term
        term *= half / (i + 0.5)
    return total


def friedman_floor(n_blocks: int, n_optimizers: int) -> float:
    """Smallest p-value of scipy's Friedman test on b blocks and k optimizers."""
    if n_optimizers < 3 or n_blocks < 2:
        return math.nan
    return chi2_sf(float(n_blocks * (n_optimizers - 1)), n_optimizers - 1)


def holm_floor(floor: float, n_tests: int) -> float:
    """The smallest Holm-adjusted p-value of ``n_tests`` tests whose smallest is ``floor``."""
    return min(1.0, max(n_tests, 1) * floor)


@dataclass(frozen=True)
class Family:
    """One family of tests: ``n`` pairs per test (blocks for Friedman), ``n_tests`` tests."""

    family: str
    problem: str
    loss: str
    n: int
    n_tests: int
    alpha: float = ALPHA
    n_optimizers: int = 0  # Friedman: the k it ranks

    @property
    def test(self) -> str:
        if self.family == "friedman":
            return "friedman chi-square"
        return "wilcoxon or sign, exact" if self.n <= EXACT_LIMIT else "wilcoxon normal"

    @property
    def correction(self) -> str:
        return f"holm over {self.n_tests}" if self.n_tests > 1 else "none"

    def floor_at(self, n: int) -> float:
        if self.family == "friedman":
            return friedman_floor(n, self.n_optimizers)
        return holm_floor(paired_floor(n), self.n_tests)

    @property
    def min_p(self) -> float:
        if self.family == "friedman":
            return friedman_floor(self.n, self.n_optimizers)
        return paired_floor(self.n)

    @property
    def min_p_adjusted(self) -> float:
        return self.floor_at(self.n)

    @property
    def can_be_significant(self) -> bool:
        return self.min_p_adjusted < self.alpha

    @property
    def n_needed(self) -> float:
        """The smallest n whose floor is below alpha (``n`` itself when it already is)."""
        if math.isnan(self.min_p_adjusted):
            return math.nan
        n = max(self.n, 1)
        while n <= SEARCH_LIMIT:
            if self.floor_at(n) < self.alpha:
                return n
            n += 1
        return math.nan

    def note(self) -> str:
        unit = "blocks" if self.family == "friedman" else "seeds"
        if math.isnan(self.min_p_adjusted):
            return "no test: Friedman needs >= 3 optimizers and >= 2 (problem, loss) blocks"
        level = f"{_number(self.min_p_adjusted)} {'<' if self.can_be_significant else '>='} "
        level += f"{_number(self.alpha)}"
        at = f"n = {self.n}" + (" blocks" if self.family == "friedman" else "")
        if self.can_be_significant:
            return f"smallest reachable p {level} at {at}"
        needed = self.n_needed
        more = f"{needed:.0f} {unit} needed" if not math.isnan(needed) else "more data needed"
        return f"no difference can be significant at {at} (smallest reachable p {level}); {more}"

    def row(self) -> dict:
        return {
            "family": self.family,
            "problem": self.problem,
            "loss": self.loss,
            "test": self.test,
            "correction": self.correction,
            "n": self.n,
            "n_tests": self.n_tests,
            "alpha": self.alpha,
            "min_p": self.min_p,
            "min_p_adjusted": self.min_p_adjusted,
            "can_be_significant": self.can_be_significant,
            "n_needed": self.n_needed,
            "note": self.note(),
        }


def _number(value: float) -> str:
    return f"{value:.3g}"


ALL = "all"  # problem and loss of a family across blocks (Friedman)


def families_for(
    blocks: dict[tuple[str, str], int],
    n_seeds,
    baseline: bool = False,
    swept: dict[tuple[str, str], int] | None = None,
    alpha: float = ALPHA,
) -> list[Family]:
    """The families of the analysis: ``blocks``: (problem, loss) -> its number of
    optimizers; ``n_seeds``: evaluation seeds (an int, or per block); ``baseline``:
    whether a baseline table is made; ``swept``: (problem, loss) -> its number of
    tuned optimizers (tuning gain)."""
    seeds = n_seeds if isinstance(n_seeds, dict) else dict.fromkeys(blocks, n_seeds)
    found = []
    for (problem, loss), k in blocks.items():
        n = int(seeds[(problem, loss)])
        if k >= 2:
            found.append(Family("pairwise", problem, loss, n, k * (k - 1) // 2, alpha))
            if baseline:
                found.append(Family("baseline", problem, loss, n, 1, alpha))
        if (swept or {}).get((problem, loss)):
            found.append(Family("tuning_gain", problem, loss, n, 1, alpha))
    if len(set(blocks.values())) == 1 and next(iter(blocks.values())) >= 3:
        k = next(iter(blocks.values()))
        found.append(Family("friedman", ALL, ALL, len(blocks), 1, alpha, n_optimizers=k))
    return found


def table_rows(families: list[Family]) -> list[dict]:
    return [family.row() for family in families]


def plan_lines(families: list[Family]) -> list[str]:
    """The plan-time summary: one line per kind of family and (n, tests), naming
    the (problem, loss) blocks it covers."""
    groups: dict[tuple, list[Family]] = {}
    for family in families:
        groups.setdefault((family.family, family.n, family.n_tests), []).append(family)
    lines = []
    for (kind, n, n_tests), members in groups.items():
        what = {
            "pairwise": "pairwise tests (leaderboard ranks; "
            + (f"Holm over {n_tests} pairs)" if n_tests > 1 else "one pair, uncorrected)"),
            "baseline": "each optimizer vs the baseline (uncorrected)",
            "tuning_gain": "tuned vs one-shot (uncorrected)",
            "friedman": f"Friedman test of {members[0].n_optimizers} optimizers over {n} "
            + ("block" if n == 1 else "blocks"),
        }[kind]
        where = ", ".join(f"{f.problem}/{f.loss}" for f in members[:4])
        where += f" and {len(members) - 4} more" if len(members) > 4 else ""
        scope = "" if kind == "friedman" else f" on {where}, {n} evaluation seeds"
        lines.append(f"power: {what}{scope}: {members[0].note()}")
    return lines
