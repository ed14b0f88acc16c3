"""The oneDNN engine: ctypes bindings to libdnnl's C API (the onednn-cpu-gomp
wheel), whole-layer primitives, and a cache of them.

Only this module knows oneDNN. Layers hand it NCHW float32 numpy arrays (their
blobs) and get NCHW arrays back; where a primitive runs faster on a blocked
layout, the arrays are reordered into it and back inside the call, so nothing
a user can read is ever blocked. Primitive descriptors ask for `any` layouts
and keep what oneDNN picks; direct algorithms only (no Winograd), so the same
inputs and thread count give the same bits."""
import ctypes
import os
import sys
import threading

import numpy as np

# -- the C API's constants (oneDNN 3.x, dnnl_types.h) ----------------------
SUCCESS = 0
F32 = 3
TAG_ANY = 1
TAG_NCHW16C, TAG_NCDHW16C = 78, 121
CPU = 1
STREAM_DEFAULT = 1
FORWARD_TRAINING, FORWARD_INFERENCE = 64, 96
BACKWARD, BACKWARD_DATA, BACKWARD_WEIGHTS = 128, 160, 192
CONVOLUTION_DIRECT, DECONVOLUTION_DIRECT = 1, 10
ELTWISE = {"relu": 32, "tanh": 33, "elu": 34, "abs": 36, "linear": 38, "soft_relu": 39, "logistic": 41,
           "exp": 42, "swish": 44, "log": 45, "clip": 46, "clip_v2": 47, "pow": 48,
           "relu_dst": 256, "tanh_dst": 257, "logistic_dst": 260, "clip_v2_dst": 262}
POOLING_MAX, POOLING_AVG_INCLUDE, POOLING_AVG_EXCLUDE = 511, 767, 1023
LRN_ACROSS, LRN_WITHIN = 2815, 3071
BINARY_ADD, BINARY_MUL = 131056, 131057
SOFTMAX_ACCURATE = 196608
BN_GLOBAL_STATS, BN_SCALE, BN_SHIFT, BN_FUSE_RELU = 1, 2, 4, 8
Q_SRC, Q_DIFF_SRC, Q_WEIGHTS, Q_DIFF_WEIGHTS, Q_DST, Q_DIFF_DST, Q_WORKSPACE, Q_SCRATCHPAD = range(129, 137)
Q_EXEC_ARG = 255
Q_NDIMS, Q_DIMS = 256, 257
Q_IMPL_INFO = 8
ARG_SRC, ARG_SRC_1, ARG_DST, ARG_WEIGHTS, ARG_BIAS = 1, 2, 17, 33, 41
ARG_MEAN, ARG_VARIANCE, ARG_SCALE, ARG_SHIFT, ARG_WORKSPACE, ARG_SCRATCHPAD = 49, 50, 51, 52, 64, 80
ARG_DIFF_SRC, ARG_DIFF_DST, ARG_DIFF_WEIGHTS, ARG_DIFF_BIAS, ARG_DIFF_SCALE, ARG_DIFF_SHIFT = \
    129, 145, 161, 169, 255, 256
ARG_MULTIPLE_SRC = 1024
ARG_POST_OP_BASE = 32768            # DNNL_ARG_ATTR_MULTIPLE_POST_OP(i) = base * (i + 1), oneDNN 3.x
SCRATCHPAD_USER = 1
MAX_NDIMS = 12

_dims = ctypes.c_int64 * MAX_NDIMS
_handle = ctypes.c_void_p


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", ctypes.c_void_p)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]


class DnnlError(RuntimeError):
    pass


# -- loading ---------------------------------------------------------------
_state = {"lib": None, "error": None, "tried": False, "engine": None, "stream": None, "omp": None}

LIBRARY_ENV = "PYCAFFE_LITE_DNNL_LIBRARY"


def _candidates():
    """Where the onednn-cpu-gomp wheel puts libdnnl.so.3: <prefix>/lib of the
    environment it was installed into (a venv, the user site, the system)."""
    given = os.environ.get(LIBRARY_ENV)
    if given:
        return [given]
    found = []
    try:
        from importlib import metadata
        dist = metadata.distribution("onednn-cpu-gomp")
        for f in dist.files or ():
            if f.name == "libdnnl.so.3":
                found.append(str(dist.locate_file(f)))
    except Exception:           # not installed through pip, or no metadata
        pass
    for prefix in (sys.prefix, sys.base_prefix, os.path.expanduser("~/.local")):
        found.append(os.path.join(prefix, "lib", "libdnnl.so.3"))
    found.append("libdnnl.so.3")
    return found


def _bind(lib):
    def fn(name, restype, *argtypes):
        f = getattr(lib, name)
        f.restype = restype
        f.argtypes = argtypes
        return f
    st, h, hp, md, dims, i64, f32, ci = ctypes.c_int, _handle, ctypes.POINTER(_handle), _handle, _dims, \
        ctypes.c_int64, ctypes.c_float, ctypes.c_int
    fn("dnnl_version", ctypes.POINTER(_Version))
    fn("dnnl_engine_create", st, hp, ci, ctypes.c_size_t)
    fn("dnnl_stream_create", st, hp, h, ctypes.c_uint)
    fn("dnnl_stream_wait", st, h)
    fn("dnnl_memory_desc_create_with_strides", st, hp, ci, dims, ci, dims)
    fn("dnnl_memory_desc_create_with_tag", st, hp, ci, dims, ci, ci)
    fn("dnnl_memory_desc_destroy", st, h)
    fn("dnnl_memory_desc_clone", st, hp, h)
    fn("dnnl_memory_desc_equal", ci, h, h)
    fn("dnnl_memory_desc_get_size", ctypes.c_size_t, h)
    fn("dnnl_memory_desc_query", st, h, ci, ctypes.c_void_p)
    fn("dnnl_memory_create", st, hp, h, h, h)
    fn("dnnl_memory_set_data_handle", st, h, h)
    fn("dnnl_memory_get_data_handle", st, h, ctypes.POINTER(ctypes.c_void_p))
    fn("dnnl_memory_get_memory_desc", st, h, hp)
    fn("dnnl_memory_destroy", st, h)
    fn("dnnl_primitive_attr_create", st, hp)
    fn("dnnl_primitive_attr_destroy", st, h)
    fn("dnnl_primitive_attr_set_scratchpad_mode", st, h, ci)
    fn("dnnl_primitive_attr_set_post_ops", st, h, h)
    fn("dnnl_post_ops_create", st, hp)
    fn("dnnl_post_ops_destroy", st, h)
    fn("dnnl_post_ops_append_eltwise", st, h, ci, f32, f32)
    fn("dnnl_post_ops_append_sum", st, h, f32, ctypes.c_int32, ci)
    fn("dnnl_post_ops_append_binary", st, h, ci, h)
    fn("dnnl_primitive_desc_destroy", st, h)
    fn("dnnl_primitive_desc_query", st, h, ci, ci, ctypes.c_void_p)
    fn("dnnl_primitive_desc_query_md", h, h, ci, ci)
    fn("dnnl_primitive_create", st, hp, h)
    fn("dnnl_primitive_destroy", st, h)
    fn("dnnl_primitive_execute", st, h, h, ci, ctypes.POINTER(_ExecArg))
    fn("dnnl_reorder_primitive_desc_create", st, hp, md, h, md, h, h)
    conv_like = (st, hp, h, ci, ci, md, md, md, md, dims, dims, dims, dims, h)
    fn("dnnl_convolution_forward_primitive_desc_create", *conv_like)
    fn("dnnl_deconvolution_forward_primitive_desc_create", *conv_like)
    bwd_like = (st, hp, h, ci, md, md, md, dims, dims, dims, dims, h, h)
    fn("dnnl_convolution_backward_data_primitive_desc_create", *bwd_like)
    fn("dnnl_deconvolution_backward_data_primitive_desc_create", *bwd_like)
    bww_like = (st, hp, h, ci, md, md, md, md, dims, dims, dims, dims, h, h)
    fn("dnnl_convolution_backward_weights_primitive_desc_create", *bww_like)
    fn("dnnl_deconvolution_backward_weights_primitive_desc_create", *bww_like)
    fn("dnnl_inner_product_forward_primitive_desc_create", st, hp, h, ci, md, md, md, md, h)
    fn("dnnl_inner_product_backward_data_primitive_desc_create", st, hp, h, md, md, md, h, h)
    fn("dnnl_inner_product_backward_weights_primitive_desc_create", st, hp, h, md, md, md, md, h, h)
    fn("dnnl_eltwise_forward_primitive_desc_create", st, hp, h, ci, ci, md, md, f32, f32, h)
    fn("dnnl_eltwise_backward_primitive_desc_create", st, hp, h, ci, md, md, md, f32, f32, h, h)
    fn("dnnl_pooling_forward_primitive_desc_create", st, hp, h, ci, ci, md, md, dims, dims, dims, dims, dims, h)
    fn("dnnl_pooling_backward_primitive_desc_create", st, hp, h, ci, md, md, dims, dims, dims, dims, dims, h, h)
    fn("dnnl_lrn_forward_primitive_desc_create", st, hp, h, ci, ci, md, md, i64, f32, f32, f32, h)
    fn("dnnl_lrn_backward_primitive_desc_create", st, hp, h, ci, md, md, md, i64, f32, f32, f32, h, h)
    fn("dnnl_batch_normalization_forward_primitive_desc_create", st, hp, h, ci, md, md, f32, ctypes.c_uint, h)
    fn("dnnl_batch_normalization_backward_primitive_desc_create", st, hp, h, ci, md, md, md, f32,
       ctypes.c_uint, h, h)
    fn("dnnl_softmax_forward_primitive_desc_create", st, hp, h, ci, ci, md, md, ci, h)
    fn("dnnl_binary_primitive_desc_create", st, hp, h, ci, md, md, md, h)
    fn("dnnl_concat_primitive_desc_create", st, hp, h, md, ci, ci, ctypes.POINTER(_handle), h)
    fn("dnnl_sum_primitive_desc_create", st, hp, h, md, ci, ctypes.POINTER(f32), ctypes.POINTER(_handle), h)
    fn("dnnl_matmul_primitive_desc_create", st, hp, h, md, md, md, md, h)
    fn("dnnl_sgemm", st, ctypes.c_char, ctypes.c_char, i64, i64, i64, f32, ctypes.c_void_p, i64,
       ctypes.c_void_p, i64, f32, ctypes.c_void_p, i64)
    return lib


def _load():
    errors = []
    for path in _candidates():
        if os.path.sep in path and not os.path.exists(path):
            continue
        try:
            lib = _bind(ctypes.CDLL(path))
        except (OSError, AttributeError) as e:
            errors.append("%s: %s" % (path, e))
            continue
        v = lib.dnnl_version().contents
        if v.major < 3:
            errors.append("%s is oneDNN %d.%d; 3.x is needed" % (path, v.major, v.minor))
            continue
        engine, stream = _handle(), _handle()
        if lib.dnnl_engine_create(ctypes.byref(engine), CPU, 0) != SUCCESS or \
                lib.dnnl_stream_create(ctypes.byref(stream), engine, STREAM_DEFAULT) != SUCCESS:
            errors.append("%s: no CPU engine" % path)
            continue
        _state.update(lib=lib, engine=engine, stream=stream, path=path,
                      version="%d.%d.%d" % (v.major, v.minor, v.patch))
        return
    _state["error"] = ("libdnnl.so.3 was not found (pip install onednn-cpu-gomp)" if not errors
                       else "; ".join(errors))


def library():
    """libdnnl, loaded on first use; None when it cannot be (see unavailable_reason)."""
    if not _state["tried"]:
        _state["tried"] = True
        if sys.platform.startswith("linux"):
            _load()
        else:
            _state["error"] = "the onednn-cpu-gomp wheel exists for Linux x86-64 only"
    return _state["lib"]


def available():
    return library() is not None


def unavailable_reason():
    library()
    return _state["error"]


def version():
    return _state.get("version") if available() else None


def library_path():
    return os.path.realpath(_state["path"]) if available() else None


def _check(status, what):
    if status != SUCCESS:
        raise DnnlError("oneDNN %s failed (status %d)" % (what, status))


# -- memory descriptors ----------------------------------------------------
class Desc:
    """A memory descriptor that this object owns (destroyed with it)."""
    __slots__ = ("handle", "tags", "__weakref__")

    def __init__(self, handle):
        self.handle = handle
        self.tags = {}          # blocked_tag's answers

    @classmethod
    def plain(cls, shape, strides=None):
        """Row-major float32 (Caffe's layout), or the given element strides."""
        shape = tuple(int(d) for d in shape) or (1,)
        if strides is None:
            strides, acc = [], 1
            for d in reversed(shape):
                strides.append(acc)
                acc *= d
            strides = tuple(reversed(strides))
        h = _handle()
        _check(library().dnnl_memory_desc_create_with_strides(
            ctypes.byref(h), len(shape), _dims(*shape), F32, _dims(*strides)), "memory descriptor")
        return cls(h)

    @classmethod
    def any(cls, shape):
        """Whatever layout the primitive prefers."""
        h = _handle()
        _check(library().dnnl_memory_desc_create_with_tag(
            ctypes.byref(h), len(shape), _dims(*shape), F32, TAG_ANY), "memory descriptor")
        return cls(h)

    @classmethod
    def tagged(cls, shape, tag):
        h = _handle()
        _check(library().dnnl_memory_desc_create_with_tag(
            ctypes.byref(h), len(shape), _dims(*shape), F32, tag), "memory descriptor")
        return cls(h)

    @classmethod
    def clone_of(cls, handle):
        h = _handle()
        _check(library().dnnl_memory_desc_clone(ctypes.byref(h), handle), "memory descriptor clone")
        return cls(h)

    @property
    def nbytes(self):
        return library().dnnl_memory_desc_get_size(self.handle)

    @property
    def dims(self):
        lib = library()
        n = ctypes.c_int()
        lib.dnnl_memory_desc_query(self.handle, Q_NDIMS, ctypes.byref(n))
        dims = ctypes.POINTER(_dims)()
        lib.dnnl_memory_desc_query(self.handle, Q_DIMS, ctypes.byref(dims))
        return tuple(dims.contents[:n.value])

    def __eq__(self, other):
        return bool(library().dnnl_memory_desc_equal(self.handle, other.handle))

    __hash__ = None

    def __del__(self):
        lib = _state["lib"]
        if lib is not None and self.handle:
            lib.dnnl_memory_desc_destroy(self.handle)
            self.handle = None


def aligned(nbytes):
    """A 64-byte aligned float32 buffer of at least `nbytes` bytes."""
    raw = np.empty(nbytes // 4 + 16, np.float32)
    skip = (-raw.ctypes.data % 64) // 4
    return raw[skip:skip + (nbytes + 3) // 4]


class Attr:
    """Primitive attributes: a user scratchpad (kept by the primitive, so
    primitives never allocate one per call) and post-ops."""

    def __init__(self, eltwise=(), sum_scale=None, binary=(), add_dst=False):
        """Post-ops in this order: a sum, `binary` ((alg, Desc of the second
        operand): its operand is the execution argument post_<i>, i its
        place among all post-ops), with `add_dst` the values the destination
        held added (y = f(x) + y), `eltwise` ((alg, alpha, beta))."""
        lib = library()
        self.handle = _handle()
        _check(lib.dnnl_primitive_attr_create(ctypes.byref(self.handle)), "attributes")
        lib.dnnl_primitive_attr_set_scratchpad_mode(self.handle, SCRATCHPAD_USER)
        if eltwise or binary or add_dst or sum_scale is not None:
            ops = _handle()
            _check(lib.dnnl_post_ops_create(ctypes.byref(ops)), "post-ops")
            if sum_scale is not None:
                _check(lib.dnnl_post_ops_append_sum(ops, float(sum_scale), 0, 0), "sum post-op")
            for alg, desc in binary:
                _check(lib.dnnl_post_ops_append_binary(ops, alg, desc.handle), "binary post-op")
            if add_dst:
                _check(lib.dnnl_post_ops_append_sum(ops, 1.0, 0, 0), "sum post-op")
            for alg, alpha, beta in eltwise:
                _check(lib.dnnl_post_ops_append_eltwise(ops, ELTWISE[alg], float(alpha), float(beta)),
                       "eltwise post-op")
            _check(lib.dnnl_primitive_attr_set_post_ops(self.handle, ops), "post-ops")
            lib.dnnl_post_ops_destroy(ops)

    def __del__(self):
        lib = _state["lib"]
        if lib is not None and self.handle:
            lib.dnnl_primitive_attr_destroy(self.handle)
            self.handle = None


# -- primitives ------------------------------------------------------------
class Primitive:
    """A primitive, built from a primitive descriptor that create_pd(ptr, attr)
    fills in. `args` names the arguments it will be executed with; their
    memory descriptors are queried once, and one dnnl_memory_t per argument
    is kept and pointed at the caller's array on each execute."""

    def __init__(self, create_pd, args, what, attr=None):
        lib = library()
        self.attr = attr or Attr()
        pd = _handle()
        status = create_pd(ctypes.byref(pd), self.attr.handle)
        if status != SUCCESS:
            raise DnnlError("oneDNN has no %s primitive for this case (status %d)" % (what, status))
        self.pd = pd
        self.what = what
        self.desc = {}
        self._mem = {}
        for a in args:
            md = lib.dnnl_primitive_desc_query_md(pd, Q_EXEC_ARG, a)
            self.desc[a] = Desc.clone_of(md)
            m = _handle()
            _check(lib.dnnl_memory_create(ctypes.byref(m), md, _state["engine"], None), "memory")
            self._mem[a] = m
        scratch_md = lib.dnnl_primitive_desc_query_md(pd, Q_SCRATCHPAD, 0)
        nbytes = lib.dnnl_memory_desc_get_size(scratch_md) if scratch_md else 0
        if nbytes:
            self._scratch = aligned(nbytes)
            m = _handle()
            _check(lib.dnnl_memory_create(ctypes.byref(m), scratch_md, _state["engine"], None), "memory")
            self._mem[ARG_SCRATCHPAD] = m
            lib.dnnl_memory_set_data_handle(m, self._scratch.ctypes.data)
        self.prim = _handle()
        _check(lib.dnnl_primitive_create(ctypes.byref(self.prim), pd), "primitive creation for " + what)
        self._argv = (_ExecArg * len(self._mem))()
        for slot, (a, m) in zip(self._argv, self._mem.items()):
            slot.arg, slot.memory = a, m

    def impl(self):
        """oneDNN's name for the implementation it chose (jit:avx512_core, ...)."""
        s = ctypes.c_char_p()
        library().dnnl_primitive_desc_query(self.pd, Q_IMPL_INFO, 0, ctypes.byref(s))
        return s.value.decode()

    def md(self, arg):
        return self.desc[arg]

    def __call__(self, **arrays):
        """Run with arrays (or raw addresses) for the named arguments:
        prim(src=x, dst=y)."""
        lib = _state["lib"]
        for name, a in arrays.items():
            ptr = a if isinstance(a, int) else a.ctypes.data
            lib.dnnl_memory_set_data_handle(self._mem[_ARG_NAMES[name]], ptr)
        rec = getattr(_recording, "into", None)
        if rec is not None:
            # a raw address keeps nothing alive: such a run cannot be replayed
            rec.append(None if any(isinstance(a, int) for a in arrays.values()) else Bound(self, arrays))
        _check(lib.dnnl_primitive_execute(self.prim, _state["stream"], len(self._argv), self._argv),
               self.what)

    def __del__(self):
        lib = _state["lib"]
        if lib is None:
            return
        for m in getattr(self, "_mem", {}).values():
            lib.dnnl_memory_destroy(m)
        if getattr(self, "prim", None):
            lib.dnnl_primitive_destroy(self.prim)
        if getattr(self, "pd", None):
            lib.dnnl_primitive_desc_destroy(self.pd)


# -- recording, for the prepared forward (plan.py) --------------------------
_recording = threading.local()


def record_into(runs):
    """Append a Bound to `runs` for each primitive this thread runs from now
    on (None: stop)."""
    _recording.into = runs


class Bound:
    """One run of a primitive, its arguments bound for good: memory objects
    of its own on the arrays it ran on (kept alive here), so that running it
    again is one call into the library."""
    __slots__ = ("primitive", "arrays", "mems", "argv", "count")

    def __init__(self, primitive, arrays):
        lib, eng = library(), _state["engine"]
        self.primitive, self.arrays = primitive, tuple(arrays.values()) + (getattr(primitive, "_scratch", None),)
        self.mems = []
        self.count = len(primitive._mem)
        self.argv = (_ExecArg * self.count)()
        for slot, (arg, mem) in zip(self.argv, primitive._mem.items()):
            md, ptr, m = _handle(), ctypes.c_void_p(), _handle()
            _check(lib.dnnl_memory_get_memory_desc(mem, ctypes.byref(md)), "memory query")
            _check(lib.dnnl_memory_get_data_handle(mem, ctypes.byref(ptr)), "memory query")
            _check(lib.dnnl_memory_create(ctypes.byref(m), md, eng, ptr), "memory")
            self.mems.append(m)
            slot.arg, slot.memory = arg, m

    def __del__(self):
        lib = _state["lib"]
        if lib is not None:
            for m in self.mems:
                lib.dnnl_memory_destroy(m)


def replay(runs):
    """Run Bounds one after the other (the GIL is let go inside each)."""
    execute, stream = _state["lib"].dnnl_primitive_execute, _state["stream"]
    for b in runs:
        if execute(b.primitive.prim, stream, b.count, b.argv) != SUCCESS:
            raise DnnlError("oneDNN %s failed in a prepared forward" % b.primitive.what)


_ARG_NAMES = {"src": ARG_SRC, "src_1": ARG_SRC_1, "dst": ARG_DST, "weights": ARG_WEIGHTS, "bias": ARG_BIAS,
              "mean": ARG_MEAN, "variance": ARG_VARIANCE, "scale": ARG_SCALE, "shift": ARG_SHIFT,
              "workspace": ARG_WORKSPACE, "diff_src": ARG_DIFF_SRC, "diff_dst": ARG_DIFF_DST,
              "diff_weights": ARG_DIFF_WEIGHTS, "diff_bias": ARG_DIFF_BIAS, "diff_scale": ARG_DIFF_SCALE,
              "diff_shift": ARG_DIFF_SHIFT}
_ARG_NAMES.update(("src_of_%d" % i, ARG_MULTIPLE_SRC + i) for i in range(64))
_ARG_NAMES.update(("post_%d" % i, ARG_POST_OP_BASE * (i + 1) | ARG_SRC_1) for i in range(4))


def unblocker(desc):
    """The reorder from `desc` to Caffe's plain layout of the same dims."""
    return reorder(desc, Desc.plain(desc.dims))


def reorder(src_desc, dst_desc, accumulate=False):
    """A reorder primitive from one layout to another; `accumulate` adds into
    the destination (Caffe's param diffs accumulate)."""
    lib = library()
    eng = _state["engine"]
    attr = Attr(sum_scale=1.0) if accumulate else None
    return Primitive(lambda pd, a: lib.dnnl_reorder_primitive_desc_create(pd, src_desc.handle, eng,
                                                                        dst_desc.handle, eng, a),
                     (ARG_SRC, ARG_DST), "reorder", attr)


# -- plain arrays in, plain arrays out -------------------------------------
_INPUTS = {ARG_SRC, ARG_SRC_1, ARG_WEIGHTS, ARG_BIAS, ARG_DIFF_DST, ARG_MEAN, ARG_VARIANCE, ARG_SCALE, ARG_SHIFT} | \
    set(range(ARG_MULTIPLE_SRC, ARG_MULTIPLE_SRC + 64)) | {ARG_POST_OP_BASE * (i + 1) | ARG_SRC_1 for i in range(4)}
_shared = threading.local()


def _shared_buffer(key, nbytes):
    """Blocked copies live in buffers shared by every layer of a thread (its
    layers run one at a time), grown when a larger one is needed."""
    bufs = _shared.__dict__.setdefault("bufs", {})
    buf = bufs.get(key)
    if buf is None or buf.nbytes < nbytes:
        buf = bufs[key] = aligned(nbytes)
    return buf


class Reordered:
    """Reordered copies of inputs that rarely change (a layer's weights: from
    one solver update to the next, or for good in inference), kept while the
    source's token says its values are the same; Steps of one layer share it,
    so a backward reuses the forward's copy."""

    def __init__(self):
        self.copies = []            # [desc, token, buffer]

    def get(self, desc, view, move):
        token = view.token()
        for entry in self.copies:
            if entry[0] == desc:
                break
        else:
            entry = [desc, None, None]
            self.copies.append(entry)
        if token is not None and entry[1] == token:
            return entry[2]
        if entry[2] is None:
            entry[2] = aligned(desc.nbytes)
        move(src=view.read(), dst=entry[2])
        entry[1] = token
        return entry[2]


class Step:
    """A primitive whose caller speaks in plain (Caffe) layouts. Each argument
    is a numpy array in the layout `plain` gives, or a blob's EngineView.
    Where the primitive chose another layout, inputs are reordered into
    shared buffers on the way in, outputs back on the way out; a view whose
    blob already holds the chosen layout is used as it is, and an output view
    keeps the chosen layout for the next oneDNN layer when its blob allows.
    `kept` arguments (workspaces a backward reuses) live in buffers of this
    step's own. Weights that need a reorder are `adopt`ed by their blob
    when asked (inference: held once, in the chosen layout), or else go
    through `reordered` (a Reordered) if given."""

    def __init__(self, prim, plain, kept=(), reordered=None, adopt=False):
        self.prim = prim
        self.plain = plain
        self.moves = {}
        for arg, desc in plain.items():
            chosen = prim.md(arg)
            if chosen != desc:
                self.moves[arg] = (reorder(desc, chosen) if arg in _INPUTS else reorder(chosen, desc))
        self.kept = {arg: aligned(prim.md(arg).nbytes) for arg in kept}
        self.reordered = reordered
        self.adopt = adopt
        self._acc = {}
        self._direct = []

    def _from(self, layout, chosen):
        """The reorder from `layout` (a blob's blocked one) to `chosen`; None
        where they differ in more than layout (a blob read under another
        shape)."""
        for src, dst, prim in self._direct:
            if src is layout and dst is chosen:
                return prim
        prim = reorder(layout, chosen) if layout.dims == chosen.dims else None
        self._direct = self._direct[-3:] + [(layout, chosen, prim)]
        return prim

    def __call__(self, accumulate=(), **arrays):
        """step(src=x, dst=y); outputs named in `accumulate` (plain arrays)
        are added to instead of overwritten."""
        run = {}
        after = []
        for name, a in arrays.items():
            arg = _ARG_NAMES[name]
            chosen = self.prim.md(arg)
            move = self.moves.get(arg)
            if arg in _INPUTS:
                if not isinstance(a, np.ndarray):
                    held = a.blocked(chosen)
                    if held is not None:
                        run[name] = held
                        continue
                    if move is not None and arg == ARG_WEIGHTS:
                        got = a.adopt(chosen, move) if self.adopt else None
                        if got is None and self.reordered is not None:
                            got = self.reordered.get(chosen, a, move)
                        if got is not None:
                            run[name] = got
                            continue
                    layout = a.layout()
                    direct = self._from(layout, chosen) if move is not None and layout is not None else None
                    if direct is not None:
                        # blocked one way, wanted another: one reorder, not
                        # two through Caffe's layout
                        buf = run[name] = _shared_buffer(arg, chosen.nbytes)
                        direct(src=a.buf.blocked, dst=buf)
                        continue
                    a = a.read()
                if move is None:
                    run[name] = a
                else:
                    buf = run[name] = _shared_buffer(arg, chosen.nbytes)
                    move(src=a, dst=buf)
                continue
            if not isinstance(a, np.ndarray):
                if move is not None:
                    claimed = a.claim(chosen)
                    if claimed is not None:
                        run[name] = claimed
                        continue
                a = a.write()
            if move is None and name not in accumulate:
                run[name] = a
                continue
            buf = run[name] = _shared_buffer(arg, chosen.nbytes)
            if name in accumulate:      # Caffe's param diffs accumulate
                move = self._acc.get(arg)
                if move is None:
                    move = self._acc[arg] = reorder(chosen, self.plain[arg], accumulate=True)
            after.append((move, buf, a))
        for arg, buf in self.kept.items():
            run[_NAME_OF[arg]] = buf
        self.prim(**run)
        for move, buf, a in after:
            move(src=buf, dst=a)


_NAME_OF = {v: k for k, v in _ARG_NAMES.items()}


def _plain(shape):
    return Desc.plain(shape)


def _strided(shape, strides):
    return Desc.plain(shape, strides)


def _z(values):
    return _dims(*[int(v) for v in values])


# -- convolution and deconvolution -----------------------------------------
class Convolution:
    """Convolution (or Deconvolution with transposed=True) of an (N, C, *S)
    input over 1 to 3 spatial axes, Caffe's weight layouts, optional bias."""

    def __init__(self, x_shape, y_shape, w_shape, group, kernel, pad, stride, dilation, bias, transposed, training,
                 relu=None, affine=False, residual=False):
        """`relu`: a ReLU of that negative slope after it; `affine`: a
        per-channel y * scale + shift before the ReLU (BatchNorm and Scale
        of an inference chain); `residual`: the destination's values added
        before the ReLU (ResNet's Eltwise SUM); all as post-ops."""
        lib, eng = library(), _state["engine"]
        g = int(group)
        n_sp = len(kernel)
        ksize = int(np.prod(kernel))
        # dnnl's weight dims: [G,] OC/G, IC/G, *K; OC is the output channels
        # of the layer (for Deconvolution too).
        if transposed:                       # Caffe: (C_in, M/g, *K)
            c_in, m_g = w_shape[0], w_shape[1]
            oc_g, ic_g = m_g, c_in // g
            dims = (oc_g, ic_g) + tuple(kernel)
            strides = (ksize, m_g * ksize) + _row_strides(kernel)
            if g > 1:
                dims = (g,) + dims
                strides = (ic_g * m_g * ksize,) + strides
        else:                                # Caffe: (M, C/g, *K)
            oc_g, ic_g = w_shape[0] // g, w_shape[1]
            dims = (oc_g, ic_g) + tuple(kernel)
            strides = _row_strides(dims)
            if g > 1:
                dims = (g,) + dims
                strides = (oc_g * ic_g * ksize,) + strides
        self.w_plain = _strided(dims, strides)
        x_plain, y_plain = _plain(x_shape), _plain(y_shape)
        b_plain = _plain((y_shape[1],)) if bias else None
        geometry = (_z(stride), _z([d - 1 for d in dilation]), _z(pad), _z(pad))
        if transposed:
            alg, fwd_create = DECONVOLUTION_DIRECT, lib.dnnl_deconvolution_forward_primitive_desc_create
            bwd_d_create = lib.dnnl_deconvolution_backward_data_primitive_desc_create
            bwd_w_create = lib.dnnl_deconvolution_backward_weights_primitive_desc_create
        else:
            alg, fwd_create = CONVOLUTION_DIRECT, lib.dnnl_convolution_forward_primitive_desc_create
            bwd_d_create = lib.dnnl_convolution_backward_data_primitive_desc_create
            bwd_w_create = lib.dnnl_convolution_backward_weights_primitive_desc_create
        xa, ya, wa = Desc.any(x_shape), Desc.any(y_shape), Desc.any(dims)
        prop = FORWARD_TRAINING if training else FORWARD_INFERENCE
        bh = b_plain.handle if bias else None
        post = {}
        if affine:
            channel = _plain((1, y_shape[1]) + (1,) * n_sp)
            post = {_ARG_NAMES["post_0"]: channel, _ARG_NAMES["post_1"]: channel}
        attr = Attr(eltwise=[("relu", relu, 0.0)] if relu is not None else (),
                    binary=[(BINARY_MUL, channel), (BINARY_ADD, channel)] if affine else (), add_dst=residual)
        fwd = Primitive(lambda pd, a: fwd_create(pd, eng, prop, alg, xa.handle, wa.handle, bh, ya.handle,
                                                 *geometry, a),
                        (ARG_SRC, ARG_WEIGHTS, ARG_DST) + ((ARG_BIAS,) if bias else ()) + tuple(post), "convolution",
                        attr)
        plain = {ARG_SRC: x_plain, ARG_WEIGHTS: self.w_plain, ARG_DST: y_plain}
        plain.update(post)
        if bias:
            plain[ARG_BIAS] = b_plain
        self.weights = Reordered()
        self.fwd = Step(fwd, plain, reordered=self.weights, adopt=not training)
        self.bias = bias
        self.bwd_data = self.bwd_weights = None
        if training:
            self.bwd_data = Step(Primitive(
                lambda pd, a: bwd_d_create(pd, eng, alg, xa.handle, wa.handle, ya.handle, *geometry, fwd.pd, a),
                (ARG_DIFF_SRC, ARG_WEIGHTS, ARG_DIFF_DST), "convolution backward data"),
                {ARG_DIFF_SRC: x_plain, ARG_WEIGHTS: self.w_plain, ARG_DIFF_DST: y_plain}, reordered=self.weights)
            wplain = {ARG_SRC: x_plain, ARG_DIFF_WEIGHTS: self.w_plain, ARG_DIFF_DST: y_plain}
            if bias:
                wplain[ARG_DIFF_BIAS] = b_plain
            self.bwd_weights = Step(Primitive(
                lambda pd, a: bwd_w_create(pd, eng, alg, xa.handle, wa.handle, bh, ya.handle, *geometry,
                                           fwd.pd, a),
                (ARG_SRC, ARG_DIFF_WEIGHTS, ARG_DIFF_DST) + ((ARG_DIFF_BIAS,) if bias else ()),
                "convolution backward weights"), wplain)

    def weights_reordered(self):
        """Whether the forward keeps its weights in a layout of its own."""
        return ARG_WEIGHTS in self.fwd.moves

    def forward(self, x, w, b, y, scale=None, shift=None):
        args = {"src": x, "weights": w, "dst": y}
        if self.bias:
            args["bias"] = b
        if scale is not None:
            args["post_0"], args["post_1"] = scale, shift
        self.fwd(**args)

    def backward_data(self, dy, w, dx):
        self.bwd_data(diff_dst=dy, weights=w, diff_src=dx)

    def backward_weights(self, x, dy, dw, db, accumulate_w, accumulate_b):
        acc = (("diff_weights",) if accumulate_w else ()) + (("diff_bias",) if accumulate_b else ())
        if self.bias:
            self.bwd_weights(src=x, diff_dst=dy, diff_weights=dw, diff_bias=db, accumulate=acc)
        else:
            self.bwd_weights(src=x, diff_dst=dy, diff_weights=dw, accumulate=acc)


def _row_strides(dims):
    out, acc = [], 1
    for d in reversed(tuple(dims)):
        out.append(acc)
        acc *= int(d)
    return tuple(reversed(out))


# -- inner product ---------------------------------------------------------
class InnerProduct:
    """y = x W^T + b over (M, K) rows; W is Caffe's (N, K), or (K, N) with
    transpose. The weights stay in Caffe's layout (a blocked copy of fc6,
    151 MB, per pass would cost more than it saves). Each pass takes what
    measured fastest on these shapes: the forward a matmul primitive (oneDNN's
    sgemm for one or two rows), the data gradient sgemm, the weight gradient
    sgemm for small batches and a matmul (its sum post-op accumulating, as
    Caffe's weight diff does) for large ones."""

    SGEMM_FORWARD_ROWS, SGEMM_WEIGHT_ROWS = 2, 32

    def __init__(self, m, k, n, transpose, bias, training):
        self.m, self.k, self.n, self.transpose, self.bias = m, k, n, transpose, bias
        wt = _strided((k, n), (n, 1)) if transpose else _strided((k, n), (1, k))    # W^T as (K, N)
        self.fwd = None if m <= self.SGEMM_FORWARD_ROWS else _matmul(_plain((m, k)), wt, _plain((m, n)))
        self.bwd_data = self.bwd_weights = None
        if training:
            self.bwd_data = True
            if m > self.SGEMM_WEIGHT_ROWS:
                # dW = dY^T X, or for the transposed layout dW^T = X^T dY
                if transpose:
                    a, b, c = _strided((k, m), (1, k)), _plain((m, n)), _plain((k, n))
                else:
                    a, b, c = _strided((n, m), (1, n)), _plain((m, k)), _plain((n, k))
                self.bwd_weights = (_matmul(a, b, c), _matmul(a, b, c, accumulate=True))
            else:
                self.bwd_weights = True

    def _w_ld(self):
        return self.n if self.transpose else self.k

    def forward(self, x, w, b, y):
        if self.fwd is None:
            _sgemm(False, not self.transpose, self.m, self.n, self.k, x, self.k, w, self._w_ld(), 0.0, y)
        else:
            self.fwd(src=x, weights=w, dst=y)
        if self.bias:
            y += b

    def backward_data(self, dy, w, dx):
        _sgemm(False, self.transpose, self.m, self.k, self.n, dy, self.n, w, self._w_ld(), 0.0, dx)

    def backward_weights(self, x, dy, dw, db, accumulate_w, accumulate_b):
        if self.bwd_weights is True:
            if self.transpose:
                _sgemm(True, False, self.k, self.n, self.m, x, self.k, dy, self.n, 1.0 if accumulate_w else 0.0, dw)
            else:
                _sgemm(True, False, self.n, self.k, self.m, dy, self.n, x, self.k, 1.0 if accumulate_w else 0.0, dw)
        else:
            mm = self.bwd_weights[1 if accumulate_w else 0]
            if self.transpose:
                mm(src=x, weights=dy, dst=dw)
            else:
                mm(src=dy, weights=x, dst=dw)
        if db is not None:
            if accumulate_b:
                db += dy.sum(axis=0)
            else:
                dy.sum(axis=0, out=db)


def _matmul(a, b, c, accumulate=False):
    lib, eng = library(), _state["engine"]
    return Primitive(lambda pd, attr: lib.dnnl_matmul_primitive_desc_create(
        pd, eng, a.handle, b.handle, None, c.handle, attr), (ARG_SRC, ARG_WEIGHTS, ARG_DST), "matmul",
        Attr(sum_scale=1.0) if accumulate else None)


def _sgemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c):
    """Row-major c = a b (+ beta c), oneDNN's own GEMM."""
    rec = getattr(_recording, "into", None)
    if rec is not None:
        rec.append(None)                         # not a primitive: not replayed
    _check(library().dnnl_sgemm(b"T" if trans_a else b"N", b"T" if trans_b else b"N", m, n, k, 1.0,
                                a.ctypes.data, lda, b.ctypes.data, ldb, beta, c.ctypes.data, n), "sgemm")


# -- pooling ---------------------------------------------------------------
def caffe_pool_padding(size, kernel, pad, stride, out):
    """Right padding that makes oneDNN's floor rule give Caffe's output size."""
    return tuple((o - 1) * s + k - i - p for i, k, p, s, o in zip(size, kernel, pad, stride, out))


def caffe_ave_algorithm(pad, pad_r):
    """The oneDNN AVE algorithm whose divisor is Caffe's, or None. Caffe
    divides by the window clipped to the padded input (size + pad): that is
    the whole kernel (include padding) when no window passes size + pad, and
    the part inside the input (exclude padding) when there is no padding."""
    if all(r <= p for p, r in zip(pad, pad_r)):
        return POOLING_AVG_INCLUDE
    if all(p == 0 for p in pad):
        return POOLING_AVG_EXCLUDE
    return None


def _inner(shape, layout):
    """The descriptor a layer primitive runs on: Caffe's plain layout, or the
    blocked `layout` (a format tag) its input blob already holds."""
    return _plain(shape) if layout is None else Desc.tagged(shape, layout)


# The layouts convolutions leave their outputs in (channel blocks of 16 or 8,
# channels last), by number of axes: layers after a convolution take these as
# they are.
_LAYOUTS = {3: (56, 69, 15), 4: (TAG_NCHW16C, 102, 22), 5: (TAG_NCDHW16C, 142, 33)}


def blocked_tag(desc, shape):
    """The format tag `desc` is for `shape`, if it is one of _LAYOUTS; None."""
    if desc is None:
        return None
    memo = desc.tags
    key = tuple(shape)
    if key not in memo:
        memo[key] = next((t for t in _LAYOUTS.get(len(shape), ()) if desc == Desc.tagged(shape, t)), None)
    return memo[key]


class Pooling:
    """MAX or AVE pooling of (N, C, H, W) with Caffe's output size and AVE
    divisor; MAX keeps oneDNN's argmax workspace for backward."""

    def __init__(self, x_shape, y_shape, kernel, pad, stride, maximum, training, layout=None):
        lib, eng = library(), _state["engine"]
        pad_r = caffe_pool_padding(x_shape[2:], kernel, pad, stride, y_shape[2:])
        if min(pad_r) < 0:
            raise DnnlError("Caffe's output size leaves input rows unread")
        alg = POOLING_MAX if maximum else caffe_ave_algorithm(pad, pad_r)
        if alg is None:
            raise DnnlError("Caffe's AVE divisor has no oneDNN algorithm here")
        x, y = _plain(x_shape), _plain(y_shape)
        xi, yi = _inner(x_shape, layout), _inner(y_shape, layout)
        geometry = (_z(stride), _z(kernel), _z([0] * len(kernel)), _z(pad), _z(pad_r))
        prop = FORWARD_TRAINING if training else FORWARD_INFERENCE
        kept = (ARG_WORKSPACE,) if training and maximum else ()
        fwd = Primitive(lambda pd, a: lib.dnnl_pooling_forward_primitive_desc_create(
            pd, eng, prop, alg, xi.handle, yi.handle, *geometry, a), (ARG_SRC, ARG_DST) + kept, "pooling")
        self.fwd = Step(fwd, {ARG_SRC: x, ARG_DST: y}, kept)
        self.bwd = None
        if training:
            bwd = Primitive(lambda pd, a: lib.dnnl_pooling_backward_primitive_desc_create(
                pd, eng, alg, xi.handle, yi.handle, *geometry, fwd.pd, a),
                (ARG_DIFF_SRC, ARG_DIFF_DST) + kept, "pooling backward")
            self.bwd = Step(bwd, {ARG_DIFF_SRC: x, ARG_DIFF_DST: y})
            self.bwd.kept = self.fwd.kept          # the forward's argmax

    def forward(self, x, y):
        self.fwd(src=x, dst=y)

    def backward(self, dy, dx):
        self.bwd(diff_dst=dy, diff_src=dx)


# -- local response normalization -------------------------------------------
class LRN:
    """Caffe's LRN: across channels y = x (k + alpha/n sum x^2)^-beta; within
    a channel y = x (1 + alpha/n^2 sum x^2)^-beta over an n x n window."""

    def __init__(self, shape, size, alpha, beta, k, within, training, layout=None):
        lib, eng = library(), _state["engine"]
        x = _plain(shape)
        xi = _inner(shape, layout)
        alg = LRN_WITHIN if within else LRN_ACROSS
        k = 1.0 if within else k
        prop = FORWARD_TRAINING if training else FORWARD_INFERENCE
        kept = (ARG_WORKSPACE,) if training else ()
        fwd = Primitive(lambda pd, a: lib.dnnl_lrn_forward_primitive_desc_create(
            pd, eng, prop, alg, xi.handle, xi.handle, size, alpha, beta, k, a), (ARG_SRC, ARG_DST) + kept, "LRN")
        kept = tuple(a for a in kept if fwd.md(a).nbytes)
        self.fwd = Step(fwd, {ARG_SRC: x, ARG_DST: x}, kept)
        self.bwd = None
        if training:
            bwd = Primitive(lambda pd, a: lib.dnnl_lrn_backward_primitive_desc_create(
                pd, eng, alg, xi.handle, xi.handle, xi.handle, size, alpha, beta, k, fwd.pd, a),
                (ARG_SRC, ARG_DIFF_SRC, ARG_DIFF_DST) + kept, "LRN backward")
            self.bwd = Step(bwd, {ARG_SRC: x, ARG_DIFF_SRC: x, ARG_DIFF_DST: x})
            self.bwd.kept = self.fwd.kept

    def forward(self, x, y):
        self.fwd(src=x, dst=y)

    def backward(self, x, dy, dx):
        self.bwd(src=x, diff_dst=dy, diff_src=dx)


# -- element-wise neurons ----------------------------------------------------
class Eltwise:
    """One of oneDNN's element-wise functions; backward from the input, or
    from the output for the `*_dst` algorithms (in-place layers)."""

    def __init__(self, shape, alg, alpha=0.0, beta=0.0, training=True, layout=None):
        lib, eng = library(), _state["engine"]
        if layout is None:             # element-wise: any plain shape will do
            shape = (int(np.prod(shape)),)
        x, xi = _plain(shape), _inner(shape, layout)
        self.alg = ELTWISE[alg]
        prop = FORWARD_TRAINING if training else FORWARD_INFERENCE
        fwd = Primitive(lambda pd, a: lib.dnnl_eltwise_forward_primitive_desc_create(
            pd, eng, prop, self.alg, xi.handle, xi.handle, alpha, beta, a), (ARG_SRC, ARG_DST), "eltwise")
        self.fwd = Step(fwd, {ARG_SRC: x, ARG_DST: x})
        self.use_dst = alg.endswith("_dst")
        self.bwd = None
        if training:
            data_arg = ARG_DST if self.use_dst else ARG_SRC
            self.bwd = Step(Primitive(lambda pd, a: lib.dnnl_eltwise_backward_primitive_desc_create(
                pd, eng, self.alg, xi.handle, xi.handle, xi.handle, alpha, beta, fwd.pd, a),
                (data_arg, ARG_DIFF_SRC, ARG_DIFF_DST), "eltwise backward"),
                {data_arg: x, ARG_DIFF_SRC: x, ARG_DIFF_DST: x})

    def forward(self, x, y):
        self.fwd(src=x, dst=y)

    def backward(self, data, dy, dx):
        """data: the input, or the output for a *_dst algorithm."""
        if self.use_dst:
            self.bwd(dst=data, diff_dst=dy, diff_src=dx)
        else:
            self.bwd(src=data, diff_dst=dy, diff_src=dx)


# -- batch normalization -----------------------------------------------------
class BatchNorm:
    """(x - mean) / sqrt(var + eps) per channel of (N, C, S): with given
    statistics, or the batch's (returned, the variance biased, as Caffe's).
    With `affine`, a per-channel scale and shift follow (Caffe's Scale layer
    after it), and with `relu` a ReLU; backward then also gives the scale's
    and the shift's gradients. The forward's input is kept (in the layout the
    primitive runs on) for the backward when the layer runs in place."""

    def __init__(self, shape, eps, global_stats, training, layout=None, affine=False, relu=False):
        lib, eng = library(), _state["engine"]
        x, xi = _plain(shape), _inner(shape, layout)
        self.global_stats, self.affine = global_stats, affine
        flags = (BN_GLOBAL_STATS if global_stats else 0) | (BN_SCALE | BN_SHIFT if affine else 0) | \
            (BN_FUSE_RELU if relu else 0)
        prop = FORWARD_TRAINING if training or not global_stats else FORWARD_INFERENCE
        extra = (ARG_SCALE, ARG_SHIFT) if affine else ()
        kept = (ARG_WORKSPACE,) if relu and prop == FORWARD_TRAINING else ()
        fwd = Primitive(lambda pd, a: lib.dnnl_batch_normalization_forward_primitive_desc_create(
            pd, eng, prop, xi.handle, xi.handle, eps, flags, a),
            (ARG_SRC, ARG_DST, ARG_MEAN, ARG_VARIANCE) + extra + kept, "batch normalization")
        self.fwd = Step(fwd, {ARG_SRC: x, ARG_DST: x}, kept)
        self.bwd = None
        if training:
            grads = (ARG_SCALE, ARG_DIFF_SCALE, ARG_DIFF_SHIFT) if affine else ()
            self.bwd = Step(Primitive(lambda pd, a: lib.dnnl_batch_normalization_backward_primitive_desc_create(
                pd, eng, BACKWARD if affine else BACKWARD_DATA, xi.handle, xi.handle, xi.handle, eps, flags,
                fwd.pd, a), (ARG_SRC, ARG_MEAN, ARG_VARIANCE, ARG_DIFF_DST, ARG_DIFF_SRC) + grads + kept,
                "batch normalization backward"), {ARG_SRC: x, ARG_DIFF_DST: x, ARG_DIFF_SRC: x})
            self.bwd.kept = self.fwd.kept          # the ReLU's mask
        self._saved = None

    def save_input(self, x):
        """Copy x (an EngineView or array) aside, in the primitive's layout,
        for the backward; returns what to run the forward on."""
        md = self.fwd.prim.md(ARG_SRC)
        if self._saved is None:
            self._saved = aligned(md.nbytes)
        held = x.blocked(md) if not isinstance(x, np.ndarray) else None
        if held is not None:
            np.copyto(self._saved, held[:self._saved.size])
        else:
            plain = x if isinstance(x, np.ndarray) else x.read()
            move = self.fwd.moves.get(ARG_SRC)
            if move is None:
                np.copyto(self._saved, plain.reshape(-1)[:self._saved.size])
            else:
                move(src=plain, dst=self._saved)
        return Held(self._saved)

    def saved_input(self, shape):
        """The input save_input kept, back in Caffe's plain layout."""
        out = np.empty(shape, np.float32)
        md = self.fwd.prim.md(ARG_SRC)
        if ARG_SRC in self.fwd.moves:
            unblocker(md)(src=self._saved, dst=out)
        else:
            out.reshape(-1)[...] = self._saved[:out.size]
        return out

    def forward(self, x, y, mean, var, scale=None, shift=None):
        """With global statistics, mean and var are read; else written."""
        if self.affine:
            self.fwd(src=x, dst=y, mean=mean, variance=var, scale=scale, shift=shift)
        else:
            self.fwd(src=x, dst=y, mean=mean, variance=var)

    def backward(self, x, mean, var, dy, dx, scale=None, dscale=None, dshift=None):
        if self.affine:
            self.bwd(src=x, mean=mean, variance=var, diff_dst=dy, diff_src=dx, scale=scale, diff_scale=dscale,
                     diff_shift=dshift)
        else:
            self.bwd(src=x, mean=mean, variance=var, diff_dst=dy, diff_src=dx)


class Held:
    """A buffer already in the layout a primitive wants (BatchNorm.save_input;
    a destination that holds what a sum post-op adds to)."""
    __slots__ = ("buffer",)

    def __init__(self, buffer):
        self.buffer = buffer

    def blocked(self, desc):
        return self.buffer

    claim = blocked

    def write(self):
        return self.buffer


def copy_into(view, desc, out):
    """A blob's values (an EngineView) into `out`, laid out as `desc` (by a
    reorder primitive even where the layouts agree: a prepared forward
    replays primitives only)."""
    layout = view.layout()
    src = view.buf.blocked if layout is not None else view.read()
    key = (id(layout) if layout is not None else None, id(desc))
    moves = _shared.__dict__.setdefault("copies", {})
    entry = moves.get(key)
    if entry is None or entry[0] is not layout or entry[1] is not desc:
        entry = moves[key] = (layout, desc, reorder(layout if layout is not None else Desc.plain(view.shape), desc))
    entry[2](src=src, dst=out)


# -- Eltwise SUM and PROD ----------------------------------------------------
class Eltwise2:
    """Caffe's Eltwise forward over same-shaped bottoms: the sum with
    coefficients, or (two bottoms) the product; a ReLU post-op when fused
    with an in-place ReLU (two bottoms, unit coefficients)."""

    def __init__(self, shape, n, product, coeffs, layout=None, relu=None):
        lib, eng = library(), _state["engine"]
        x, xi = _plain(shape), _inner(shape, layout)
        self.n = n
        if n == 2 and (product or all(c == 1.0 for c in coeffs)):
            alg = BINARY_MUL if product else BINARY_ADD
            attr = Attr(eltwise=[("relu", relu, 0.0)]) if relu is not None else None
            prim = Primitive(lambda pd, a: lib.dnnl_binary_primitive_desc_create(
                pd, eng, alg, xi.handle, xi.handle, xi.handle, a), (ARG_SRC, ARG_SRC_1, ARG_DST), "binary", attr)
            self.names = ("src", "src_1")
            self.fwd = Step(prim, {ARG_SRC: x, ARG_SRC_1: x, ARG_DST: x})
            return
        if product or relu is not None or n > 64:
            raise DnnlError("no single oneDNN primitive for this Eltwise")
        scales = (ctypes.c_float * n)(*coeffs)
        descs = (_handle * n)(*([xi.handle] * n))
        args = tuple(ARG_MULTIPLE_SRC + i for i in range(n)) + (ARG_DST,)
        prim = Primitive(lambda pd, a: lib.dnnl_sum_primitive_desc_create(pd, eng, xi.handle, n, scales, descs, a),
                         args, "sum")
        self.names = tuple("src_of_%d" % i for i in range(n))
        self.fwd = Step(prim, dict({a: x for a in args}))

    def forward(self, xs, y):
        self.fwd(dst=y, **dict(zip(self.names, xs)))


# -- Concat ------------------------------------------------------------------
class Concat:
    """Caffe's Concat forward along `axis`, in the bottoms' shared layout."""

    def __init__(self, shapes, axis, layout=None):
        lib, eng = library(), _state["engine"]
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        n = len(shapes)
        plains = [_plain(s) for s in shapes]
        inner = [_inner(s, layout) for s in shapes]
        y, yi = _plain(out), _inner(out, layout)
        descs = (_handle * n)(*[d.handle for d in inner])
        args = tuple(ARG_MULTIPLE_SRC + i for i in range(n)) + (ARG_DST,)
        prim = Primitive(lambda pd, a: lib.dnnl_concat_primitive_desc_create(pd, eng, yi.handle, n, axis, descs, a),
                         args, "concat")
        plain = dict(zip(args, plains))
        plain[ARG_DST] = y
        self.names = tuple("src_of_%d" % i for i in range(n))
        self.fwd = Step(prim, plain)

    def forward(self, xs, y):
        self.fwd(dst=y, **dict(zip(self.names, xs)))
