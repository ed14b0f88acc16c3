"""What every benchmark here measures with: a function's best and median
time over repeated calls, and the process's peak memory."""
import time


def timed(fn, iters, warmup=2):
    """(best, median) ms of fn() over `iters` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return 1e3 * times[0], 1e3 * times[len(times) // 2]


def peak_rss_mb():
    """Peak resident memory of this process in MB (VmHWM: unlike
    ru_maxrss, it does not start from the parent's size at fork)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")
