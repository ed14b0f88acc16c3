"""Run our CUDA kernels on the CPU: each .cu source is compiled with g++ behind
a prelude that turns __global__ functions into plain ones and a launch into
loops over blocks and threads, then called through ctypes on numpy buffers.
kernels.gpu.CudaOps runs on top of it unchanged (with numpy as its array
module), so the launch code is tested along with the kernels."""
import ctypes
import hashlib
import os
import re
import subprocess
import tempfile

import numpy as np

from pycaffe_lite.kernels import gpu

PRELUDE = r"""
#include <cmath>
#include <algorithm>
struct pcl_dim3 { unsigned x, y, z; };
static pcl_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
using std::min;
using std::max;
// Threads run one after another here, so an atomic add is a plain one.
static inline float atomicAdd(float* at, float v) { float old = *at; *at = old + v; return old; }
"""

_SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)

_CTYPES = {"long long": ctypes.c_longlong, "int": ctypes.c_int, "float": ctypes.c_float}


def kernel_signatures(source):
    """[(name, [(c type, arg name)])] of every kernel in a .cu source."""
    out = []
    for name, args in _SIGNATURE.findall(source):
        parsed = []
        for arg in args.split(","):
            arg = " ".join(arg.split())
            m = re.match(r"(?:const )?(long long|int|float)\s*(\*?)\s*(\w+)$", arg)
            if not m:
                raise ValueError("cannot emulate kernel argument %r of %s" % (arg, name))
            parsed.append((m.group(1) + m.group(2), m.group(3)))
        out.append((name, parsed))
    return out


def _wrapper(name, args):
    params = ", ".join("%s %s" % (t if t.endswith("*") else "const " + t, n) for t, n in args)
    names = ", ".join(n for _, n in args)
    return ('extern "C" void launch_%s(unsigned grid, unsigned block, %s) {\n'
            "  gridDim.x = grid; gridDim.y = gridDim.z = 1; blockDim.x = block; blockDim.y = blockDim.z = 1;\n"
            "  for (unsigned b = 0; b < grid; ++b) { blockIdx.x = b;\n"
            "    for (unsigned t = 0; t < block; ++t) { threadIdx.x = t; %s(%s); } }\n}\n"
            % (name, params, name, names))


class EmulatedKernels:
    def __init__(self, sources=gpu.SOURCES, build_dir=None):
        code = PRELUDE + gpu.read_source("common.cuh")
        self.signatures = {}
        for s in sources:
            src = gpu.read_source(s)
            code += "\n" + src
            for name, args in kernel_signatures(src):
                self.signatures[name] = args
        code += "\n" + "".join(_wrapper(n, a) for n, a in self.signatures.items())
        digest = hashlib.sha1(code.encode()).hexdigest()[:16]
        folder = build_dir or os.path.join(tempfile.gettempdir(), "pycaffe_lite_emulation")
        os.makedirs(folder, exist_ok=True)
        lib = os.path.join(folder, "kernels_%s.so" % digest)
        if not os.path.exists(lib):
            cpp = lib[:-3] + ".cpp"
            with open(cpp, "w") as f:
                f.write(code)
            tmp = lib + ".%d.tmp" % os.getpid()
            # No FMA contraction: keep the same rounding as numpy's separate multiply and add.
            subprocess.run(["g++", "-O2", "-std=c++14", "-ffp-contract=off", "-shared", "-fPIC", "-o", tmp, cpp],
                           check=True, capture_output=True, text=True)
            os.replace(tmp, lib)
        self.lib = ctypes.CDLL(lib)
        self.calls = {}

    def __call__(self, name):
        args = self.signatures[name]
        fn = getattr(self.lib, "launch_" + name)
        fn.restype = None
        fn.argtypes = [ctypes.c_uint, ctypes.c_uint] + [
            ctypes.c_void_p if t.endswith("*") else _CTYPES[t] for t, _ in args]

        def launch(grid, block, values):
            if len(values) != len(args):
                raise TypeError("%s takes %d arguments, got %d" % (name, len(args), len(values)))
            converted = []
            for (t, arg), v in zip(args, values):
                if t.endswith("*"):
                    want = {"float*": np.float32, "int*": np.int32}[t]
                    if not isinstance(v, np.ndarray) or v.dtype != want or not v.flags.c_contiguous:
                        raise TypeError("%s argument %s must be a contiguous %s array" % (name, arg, want.__name__))
                    converted.append(v.ctypes.data)
                else:
                    expected = {"long long": np.int64, "int": np.int32, "float": np.float32}[t]
                    if not isinstance(v, expected):
                        raise TypeError("%s argument %s must be %s, got %r" % (name, arg, expected.__name__, v))
                    converted.append(v.item())
            self.calls[name] = self.calls.get(name, 0) + 1
            fn(grid[0], block[0], *converted)
        return launch


_EMULATED = {}


def emulated_ops():
    """gpu.CudaOps on numpy, with the kernels compiled for the CPU (cached)."""
    if "ops" not in _EMULATED:
        _EMULATED["ops"] = gpu.CudaOps(np, EmulatedKernels())
    return _EMULATED["ops"]
