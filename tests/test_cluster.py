"""Data preparation on a Dask cluster: convert_imageset and
compute_image_mean with --scheduler give the one-process tools' files byte
for byte (the golden images), also when a worker dies mid-job; a scheduler
that does not answer is one clear error."""
import json
import os
import signal
import threading
import time

import lmdb
import pytest

from pycaffe_lite.tools import compute_image_mean, convert_imageset
from conftest import GOLDEN, golden_path

distributed = pytest.importorskip("distributed", reason="the cluster extra brings dask.distributed")


def records(path):
    env = lmdb.open(path, readonly=True, lock=False)
    with env.begin() as txn:
        out = list(txn.cursor())
    env.close()
    return out


@pytest.mark.parametrize("case", ["convert_resize", "convert_gray", "convert_encoded"])
def test_convert_on_local_cluster_is_byte_identical(case, tmp_path, monkeypatch):
    folder = golden_path("data", case)
    command = json.load(open(os.path.join(folder, "case.json")))["command"]
    monkeypatch.chdir(GOLDEN)
    alone, spread = str(tmp_path / "alone"), str(tmp_path / "spread")
    assert convert_imageset.main(command[1:-1] + [alone]) == 0
    assert convert_imageset.main(command[1:-1] + ["--scheduler=local:2", spread]) == 0
    assert records(spread) == records(alone)


def test_mean_on_local_cluster_is_byte_identical(tmp_path, monkeypatch):
    golden_path("data", "mean")
    monkeypatch.chdir(GOLDEN)
    out = str(tmp_path / "mean.binaryproto")
    assert compute_image_mean.main(["data/convert_resize/db", out, "--scheduler=local:2"]) == 0
    with open(out, "rb") as a, open(os.path.join(GOLDEN, "data", "mean", "mean.binaryproto"), "rb") as b:
        assert a.read() == b.read()


def test_a_dead_worker_is_replaced_and_the_output_is_the_same(tmp_path, monkeypatch):
    from distributed import Client, LocalCluster
    golden_path("data", "images")
    monkeypatch.chdir(GOLDEN)
    lines = open("data/list.txt").read().splitlines()
    big = tmp_path / "list.txt"
    big.write_text("\n".join(lines * 60) + "\n")          # 1440 images: long enough to lose a worker midway
    flags = ["--resize_height=64", "--resize_width=64", "data/images/", str(big)]
    alone = str(tmp_path / "alone")
    assert convert_imageset.main(flags + [alone]) == 0
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    try:
        pids = client.run(os.getpid)
        outcome = {}
        worker = threading.Thread(target=lambda: outcome.setdefault(
            "code", convert_imageset.main(flags + ["--scheduler=" + cluster.scheduler_address,
                                                   str(tmp_path / "spread")])))
        worker.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            done = client.run_on_scheduler(lambda dask_scheduler: len(
                [t for t in dask_scheduler.tasks.values() if t.state in ("memory", "released")]))
            if done >= 2:
                break
            time.sleep(0.02)
        os.kill(sorted(pids.values())[-1], signal.SIGKILL)
        assert worker.is_alive(), "the job should still be running when its worker dies"
        worker.join(300)
        assert outcome.get("code") == 0
    finally:
        client.close()
        cluster.close()
    assert records(str(tmp_path / "spread")) == records(alone)


def test_a_scheduler_that_does_not_answer(tmp_path, capsys):
    start = time.time()
    code = compute_image_mean.main([str(tmp_path), "--scheduler=tcp://127.0.0.1:9", "--scheduler_timeout=2"])
    err = capsys.readouterr().err
    if "cannot reach" not in err:       # the empty folder is refused before the cluster is asked
        lst = tmp_path / "l.txt"
        lst.write_text("a.png 0\n")
        code = convert_imageset.main(["--scheduler=tcp://127.0.0.1:9", "--scheduler_timeout=2", str(tmp_path) + "/",
                                      str(lst), str(tmp_path / "db")])
        err = capsys.readouterr().err
    assert code == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9 within 2 s" in err
    assert time.time() - start < 20
    assert not (tmp_path / "db").exists()
