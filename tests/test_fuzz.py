"""The fuzzer (tests/fuzz.py) on a fixed seed: every mutated file must either
run or stop with our clear error; a traceback of another kind, a crash or a
hang fails the category and names the case to replay. CI runs a short
sweep (PYCAFFE_LITE_FUZZ_CASES cases a category, 100 unless set); by hand,
`pytest -m fuzzlong tests/test_fuzz.py` runs 2,000 a category on another seed."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz  # noqa: E402

CASES = int(os.environ.get("PYCAFFE_LITE_FUZZ_CASES", "100"))
SEED = int(os.environ.get("PYCAFFE_LITE_FUZZ_SEED", "3"))


def sweep(category, seed, cases):
    results = fuzz.run_category(category, seed, cases)
    assert len(results) == cases
    findings = ["case %d: %s %s (replay: python tests/fuzz.py --one %s %d %d)" % (i, outcome, detail, category, seed, i)
                for i, (outcome, detail) in sorted(results.items()) if outcome not in ("ran", "clear")]
    assert not findings, "\n".join(findings)
    # the mutations reach past the parsers: some cases run to the end
    assert any(outcome == "ran" for outcome, _ in results.values()) or cases < 10


@pytest.mark.parametrize("category", fuzz.CATEGORIES)
def test_every_mutated_file_runs_or_stops_clearly(category):
    sweep(category, SEED, CASES)


@pytest.mark.fuzzlong
@pytest.mark.parametrize("category", fuzz.CATEGORIES)
def test_the_long_sweep(category):
    sweep(category, 7, 2000)


def test_the_harness_tells_each_outcome_apart():
    """A finding must not pass for a clear error: the harness's own category
    ends its cases in turn as ran, clear, traceback, crash and hang."""
    results = fuzz.run_category("selftest", 0, 5, timeout=2)
    assert [results[i][0] for i in range(5)] == ["ran", "clear", "traceback", "crash", "hang"]
    assert "IndexError: deep inside" in results[2][1]
