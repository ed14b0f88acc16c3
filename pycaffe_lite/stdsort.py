"""The order GCC's std::sort (libstdc++'s introsort) leaves equal elements in.

std::sort is not stable, and where the SSD fork sorts detections or losses
with it (keep_top_k, DetectionEvaluate, hard negative mining), ties are
common: priors over padding score alike. Which of the tied boxes survives a
cut, and in which order they are matched, decides the fork's numbers; this
replays the algorithm step for step so ours are the same."""

_THRESHOLD = 16


def std_sort(items, less):
    """A new list: items in the order std::sort(first, last, less) gives."""
    a = list(items)
    n = len(a)
    if n > 1:
        _introsort(a, 0, n, 2 * (n.bit_length() - 1), less)
        _final_insertion_sort(a, 0, n, less)
    return a


def sort_descending(items, key):
    """std::sort with a 'key(a) > key(b)' comparator (the fork's SortScorePairDescend)."""
    items = list(items)
    keys = [key(x) for x in items]
    if len(set(keys)) == len(keys):          # no ties: every sort agrees, take the fast one
        return [items[i] for i in sorted(range(len(items)), key=keys.__getitem__, reverse=True)]
    order = std_sort(range(len(items)), lambda i, j: keys[i] > keys[j])
    return [items[i] for i in order]


def first_descending(keys, k):
    """Indices of the k first of std::sort's descending order of keys (as a
    set: the order among them is not the fork's unless there are no ties)."""
    keys = list(keys)
    order = sorted(range(len(keys)), key=keys.__getitem__, reverse=True)
    if k <= 0 or k >= len(keys) or keys[order[k - 1]] != keys[order[k]]:
        return order[:max(k, 0)]             # no tie across the cut: the set is settled
    return std_sort(range(len(keys)), lambda i, j: keys[i] > keys[j])[:k]


def _introsort(a, first, last, depth, less):
    while last - first > _THRESHOLD:
        if depth == 0:
            _heap_sort(a, first, last, less)
            return
        depth -= 1
        cut = _partition_pivot(a, first, last, less)
        _introsort(a, cut, last, depth, less)
        last = cut


def _partition_pivot(a, first, last, less):
    mid = first + (last - first) // 2
    _median_to_first(a, first, first + 1, mid, last - 1, less)
    return _unguarded_partition(a, first + 1, last, first, less)


def _median_to_first(a, result, i, j, k, less):
    if less(a[i], a[j]):
        if less(a[j], a[k]):
            pick = j
        elif less(a[i], a[k]):
            pick = k
        else:
            pick = i
    elif less(a[i], a[k]):
        pick = i
    elif less(a[j], a[k]):
        pick = k
    else:
        pick = j
    a[result], a[pick] = a[pick], a[result]


def _unguarded_partition(a, first, last, pivot, less):
    while True:
        while less(a[first], a[pivot]):
            first += 1
        last -= 1
        while less(a[pivot], a[last]):
            last -= 1
        if not first < last:
            return first
        a[first], a[last] = a[last], a[first]
        first += 1


def _final_insertion_sort(a, first, last, less):
    if last - first > _THRESHOLD:
        _insertion_sort(a, first, first + _THRESHOLD, less)
        for i in range(first + _THRESHOLD, last):
            _linear_insert(a, i, less)
    else:
        _insertion_sort(a, first, last, less)


def _insertion_sort(a, first, last, less):
    for i in range(first + 1, last):
        if less(a[i], a[first]):
            v = a[i]
            a[first + 1:i + 1] = a[first:i]
            a[first] = v
        else:
            _linear_insert(a, i, less)


def _linear_insert(a, last, less):
    v = a[last]
    nxt = last - 1
    while less(v, a[nxt]):
        a[last] = a[nxt]
        last = nxt
        nxt -= 1
    a[last] = v


# -- the heap sort introsort falls back to ------------------------------------
def _heap_sort(a, first, last, less):
    n = last - first
    if n >= 2:
        parent = (n - 2) // 2
        while True:
            _adjust_heap(a, first, parent, n, a[first + parent], less)
            if parent == 0:
                break
            parent -= 1
    while last - first > 1:
        last -= 1
        v = a[last]
        a[last] = a[first]
        _adjust_heap(a, first, 0, last - first, v, less)


def _adjust_heap(a, first, hole, n, value, less):
    top = hole
    child = hole
    while child < (n - 1) // 2:
        child = 2 * (child + 1)
        if less(a[first + child], a[first + child - 1]):
            child -= 1
        a[first + hole] = a[first + child]
        hole = child
    if n % 2 == 0 and child == (n - 2) // 2:
        child = 2 * (child + 1)
        a[first + hole] = a[first + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and less(a[first + parent], value):
        a[first + hole] = a[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    a[first + hole] = value
