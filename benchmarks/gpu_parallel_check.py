"""Data-parallel training on the GPUs of a lent machine (gpu_check.sh runs it).

With two or more devices: `caffe train --gpu=all` (NCCL, one process per
device) against one device with iter_size = device count: the weights after
10 iterations agree. With one device: a solver whose gradients go through the
NCCL engine (a one-rank communicator) against a plain one: the same weights.
Prints one line per check and exits non-zero when one fails."""
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pycaffe_lite as caffe  # noqa: E402
from pycaffe_lite.proto import caffe_pb2 as pb  # noqa: E402

NET = '''layer { name: "data" type: "DummyData" top: "data" top: "label" dummy_data_param {
  shape { dim: 8 dim: 3 dim: 16 dim: 16 } shape { dim: 8 } data_filler { type: "constant" value: 0.5 }
  data_filler { type: "constant" value: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 8 kernel_size: 3
  weight_filler { type: "xavier" } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 4
  weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
'''


def solver_file(folder, name, iter_size=1):
    net = os.path.join(folder, "net.prototxt")
    with open(net, "w") as f:
        f.write(NET)
    path = os.path.join(folder, name + ".prototxt")
    with open(path, "w") as f:
        f.write('net: "%s" base_lr: 0.01 momentum: 0.9 lr_policy: "fixed" display: 1 max_iter: 10 snapshot: 10 '
                'snapshot_prefix: "%s" iter_size: %d solver_mode: GPU random_seed: 1\n'
                % (net, os.path.join(folder, name), iter_size))
    return path


def weights(path):
    net = pb.NetParameter.FromString(open(path, "rb").read())
    return [np.array(b.data, np.float32) for l in net.layer for b in l.blobs]


def main():
    import cupy
    count = cupy.cuda.runtime.getDeviceCount()
    folder = tempfile.mkdtemp(prefix="gpu_parallel_")
    ok = True
    if count >= 2:
        cmd = [sys.executable, "-m", "pycaffe_lite.tools.caffe", "train"]
        a = subprocess.run(cmd + ["--solver=" + solver_file(folder, "multi"), "--gpu=all"], capture_output=True,
                           text=True)
        b = subprocess.run(cmd + ["--solver=" + solver_file(folder, "single", iter_size=count), "--gpu=0"],
                           capture_output=True, text=True)
        if a.returncode or b.returncode:
            print("FAIL --gpu=all run:", a.stderr[-800:], b.stderr[-800:])
            return 1
        diff = max(float(np.abs(x - y).max()) for x, y in zip(weights(os.path.join(folder, "multi_iter_10.caffemodel")),
                                                              weights(os.path.join(folder, "single_iter_10.caffemodel"))))
        ok = diff < 1e-4
        print("%s --gpu=all on %d devices vs 1 device with iter_size %d: max weight difference %.3g"
              % ("PASS" if ok else "FAIL", count, count, diff))
    else:
        from cupy.cuda import nccl
        from pycaffe_lite.comm import NCCLComm
        from pycaffe_lite.parallel import DataParallel
        caffe.set_mode_gpu()
        plain = caffe.get_solver(solver_file(folder, "plain"))
        plain.step(10)
        through = caffe.get_solver(solver_file(folder, "through"))
        comm = NCCLComm(caffe.NCCL.new_uid(), 1, 0, nccl=nccl)
        dp = DataParallel(through, comm)
        dp.bcast()
        through.add_callback(dp)
        through.net.after_backward(dp)
        through.step(10)
        diff = max(float(np.abs(a.data - b.data).max()) for a, b in zip(plain.net.learnable_params,
                                                                      through.net.learnable_params))
        ok = diff < 1e-6
        print("%s one device through the NCCL engine vs plain: max weight difference %.3g"
              % ("PASS" if ok else "FAIL", diff))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
