"""Prints the reference values that src/stats.rs's tests (and tests/it/confidence.rs) check
runner's statistics against, computed with scipy rather than with runner's own code.

    python3 -m venv /tmp/sci && /tmp/sci/bin/pip install scipy
    /tmp/sci/bin/python scripts/stats_reference.py

The output is Rust: paste it over the REFERENCE_* constants at the end of src/stats.rs.
"""

from math import comb, sqrt

from scipy import stats

Z = stats.norm.ppf(0.975)


def wilson(passed, n):
    p = passed / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def paired(differences):
    n = len(differences)
    zeros = [0.0] * n
    test = stats.ttest_rel(differences, zeros)
    mean = sum(differences) / n
    se = stats.sem(differences)
    half = stats.t.ppf(0.975, n - 1) * se
    return float(mean), float(mean - half), float(mean + half), float(test.pvalue)


def items_to_detect(sd, delta=0.05):
    n = 2
    while True:
        needed = ((stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / delta) ** 2
        if n >= needed:
            return n
        n += 1


def pass_k(n, c, k):
    return 1 - comb(n - c, k) / comb(n, k), comb(c, k) / comb(n, k)


WILSON = [(0, 1), (1, 1), (0, 10), (10, 10), (17, 20), (5, 20), (1, 3), (45, 60), (150, 200)]
PAIRED = [
    [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0],
    [0.5, 0.0, 1.0, 1 / 3, -1 / 3, 0.0, 2 / 3, 0.5, 0.25, 0.0],
    [-1.0, 0.0, 0.0, -1.0, 0.0, -0.5],
    [0.1, 0.2],
    [0.00012, 0.00031, -0.00004, 0.00022, 0.00018],
]
POWER = [0.05, 0.1, 0.2, 0.3, 0.5, 0.4472135954999579, 1.0]
PASS_K = [(5, 2, k) for k in range(1, 6)] + [(10, 3, 3), (3, 3, 2), (3, 0, 2), (4, 2, 2), (4, 2, 3)]

print("    const REFERENCE_WILSON: &[(usize, usize, f64, f64)] = &[")
for passed, n in WILSON:
    low, high = wilson(passed, n)
    print(f"        ({passed}, {n}, {low!r}, {high!r}),")
print("    ];")
print("    const REFERENCE_PAIRED: &[(&[f64], f64, f64, f64, f64)] = &[")
for differences in PAIRED:
    mean, low, high, p = paired(differences)
    values = ", ".join(repr(d) for d in differences)
    print(f"        (&[{values}], {mean!r}, {low!r}, {high!r}, {p!r}),")
print("    ];")
print("    const REFERENCE_POWER: &[(f64, usize)] = &[")
for sd in POWER:
    print(f"        ({sd!r}, {items_to_detect(sd)}),")
print("    ];")
print("    const REFERENCE_PASS_K: &[(usize, usize, usize, f64, f64)] = &[")
for n, c, k in PASS_K:
    at, every = pass_k(n, c, k)
    print(f"        ({n}, {c}, {k}, {at!r}, {every!r}),")
print("    ];")

# The table-driven batch of tests/it/confidence.rs: per model, how many of the 3 repetitions of
# scenarios s1..s8 pass; every request reports 1000 * i prompt and 100 completion tokens in
# scenario s<i>; prices in USD per million tokens (input, output).
TABLE = {
    "openai:a": [3, 2, 3, 1, 0, 3, 2, 3],
    "openai:b": [3, 3, 3, 2, 2, 3, 3, 3],
    "openai:c": [1, 0, 2, 1, 0, 1, 1, 2],
}
PRICES = {"openai:a": (1.0, 2.0), "openai:b": (3.0, 6.0), "openai:c": (0.5, 1.0)}
REPEAT = 3


def run_cost(model, i):
    price_in, price_out = PRICES[model]
    return (1000 * i * price_in + 100 * price_out) / 1e6


def batch_figures():
    reference = "openai:a"
    rows = {}
    for model, passes in TABLE.items():
        runs = REPEAT * len(passes)
        passed = sum(passes)
        low, high = wilson(passed, runs)
        at = sum(pass_k(REPEAT, c, REPEAT)[0] for c in passes) / len(passes)
        every = sum(pass_k(REPEAT, c, REPEAT)[1] for c in passes) / len(passes)
        row = {"pass_rate": passed / runs, "pass_rate_low": low, "pass_rate_high": high, "pass_at_n": at, "pass_all_n": every}
        if model != reference:
            diffs = [(c - r) / REPEAT for c, r in zip(passes, TABLE[reference])]
            mean, dlow, dhigh, p = paired(diffs)
            dlow, dhigh = max(dlow, -1.0), min(dhigh, 1.0)  # a difference of fractions lies in [-1, 1]
            costs = [run_cost(model, i) - run_cost(reference, i) for i in range(1, len(passes) + 1)]
            cmean, _, _, cp = paired(costs)
            row.update(pass_diff=mean, pass_diff_low=dlow, pass_diff_high=dhigh, pass_diff_p=p,
                       cost_diff_usd=cmean, cost_diff_p=cp)
        rows[model] = row
    return rows


print("    // tests/it/confidence.rs: (model, column, value)")
print("    const EXPECTED: &[(&str, &str, f64)] = &[")
for model, row in batch_figures().items():
    for column, value in row.items():
        print(f'        ("{model}", "{column}", {float(value)!r}),')
print("    ];")

# The same batch again on openai:a alone, every run failing, against the first as --baseline:
# the change per scenario is -c/3 (an interval of fractions kept within [-1, 1]).
mean, low, high, p = paired([-c / REPEAT for c in TABLE["openai:a"]])
print(f"    // baseline change of openai:a: {mean!r} [{max(low, -1.0)!r}, {min(high, 1.0)!r}]")
