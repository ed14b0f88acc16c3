"""pycaffe_lite.stdsort against GCC's own std::sort: a C++ program built here
sorts the same (score, index) pairs with the fork's descending comparator;
the orders, ties included, must be the same."""
import shutil
import subprocess

import numpy as np
import pytest

from pycaffe_lite.stdsort import first_descending, sort_descending, std_sort

PROGRAM = r"""
#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>
static bool descend(const std::pair<float, int>& a, const std::pair<float, int>& b) { return a.first > b.first; }
int main() {
  int n;
  while (std::scanf("%d", &n) == 1) {
    std::vector<std::pair<float, int> > v(n);
    for (int i = 0; i < n; ++i) { std::scanf("%f", &v[i].first); v[i].second = i; }
    std::sort(v.begin(), v.end(), descend);
    for (int i = 0; i < n; ++i) std::printf("%d ", v[i].second);
    std::printf("\n");
  }
}
"""


@pytest.fixture(scope="module")
def gcc_sort(tmp_path_factory):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: the std::sort oracle needs it (apt install g++)")
    folder = tmp_path_factory.mktemp("stdsort")
    (folder / "sort.cpp").write_text(PROGRAM)
    subprocess.run([gxx, "-O2", "-o", str(folder / "sort"), str(folder / "sort.cpp")], check=True)
    return str(folder / "sort")


def test_orders_equal_gccs_with_ties(gcc_sort):
    rng = np.random.default_rng(0)
    cases = [rng.integers(0, levels, n).astype(np.float32) / np.float32(7)
             for n in (0, 1, 2, 3, 15, 16, 17, 18, 40, 129, 700, 3000) for levels in (1, 2, 3, 9, 10 ** 6)]
    # Descending runs with plateaus, as NMS output gives keep_top_k.
    cases += [np.repeat(np.sort(rng.random(30).astype(np.float32))[::-1], rng.integers(1, 6, 30)) for _ in range(5)]
    text = "".join("%d %s\n" % (len(c), " ".join("%.9g" % x for x in c)) for c in cases)
    out = subprocess.run([gcc_sort], input=text, capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == len(cases)
    for c, line in zip(cases, out):
        theirs = [int(i) for i in line.split()]
        ours = [i for _, i in sort_descending([(float(x), i) for i, x in enumerate(c)], key=lambda p: p[0])]
        assert ours == theirs, "n=%d" % len(c)
        ties = sorted(set(first_descending(c.tolist(), len(c) // 3)))
        assert ties == sorted(theirs[:len(c) // 3])


def test_heap_fallback_still_sorts():
    # Depth 0 from the start: the whole range goes through the heap sort.
    from pycaffe_lite import stdsort
    a = list(np.random.default_rng(1).integers(0, 50, 500))
    stdsort._introsort(a, 0, len(a), 0, lambda x, y: x < y)
    stdsort._final_insertion_sort(a, 0, len(a), lambda x, y: x < y)
    assert a == sorted(a)
    assert std_sort([3, 1, 2], lambda x, y: x < y) == [1, 2, 3]
