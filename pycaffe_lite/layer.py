"""Layer base class and the one registry of layer types.

A layer keeps its LayerParameter, its learnable/state blobs (`blobs`), and the
loss weight of each top. Subclasses implement `layer_setup`, `reshape`,
`forward` and `backward`; the wrappers here do what Caffe's Layer does around
them (count checks, loss weights, reshape before every forward)."""
from .errors import ConfigError
from . import backend
from .scratch import Buffers

_REGISTRY = {}


def register(*names):
    def deco(cls):
        for name in names:
            _REGISTRY[name] = cls
        cls.type = names[0]
        return cls
    return deco


def layer_type_list():
    return sorted(_REGISTRY)


def create_layer(param, source="net"):
    cls = _REGISTRY.get(param.type)
    if cls is None:
        raise ConfigError(
            "%s: layer '%s' has unknown type '%s'. Known types: %s"
            % (source, param.name, param.type, ", ".join(layer_type_list())))
    return cls(param)


class BlobVec(list):
    """A layer's parameter blobs; pycaffe's Python layers add theirs with add_blob."""

    def add_blob(self, *shape):
        from .blob import Blob
        self.append(Blob(*shape))


class Layer:
    """Base of every layer, and pycaffe's caffe.Layer for Python layers, which
    define setup, reshape, forward and backward."""
    type = None
    # Bottom/top count rules (None: not checked).
    exact_bottoms = min_bottoms = max_bottoms = None
    exact_tops = min_tops = max_tops = None
    # Loss layers weight their first top by 1 unless loss_weight says otherwise.
    default_loss_weight = 0.0
    # Which engine ran this layer's last forward or backward: 'numpy' or
    # 'dnnl' on the CPU (caffe time prints it).
    engine = "numpy"

    def __init__(self, param):
        self.param = param
        self.phase = param.phase
        self.blobs = BlobVec()
        self.loss_weights = []
        self.param_propagate_down = []
        # Set by the Net once it knows; a layer used on its own assumes it will.
        self.need_backward = True

    @property
    def name(self):
        return self.param.name

    def error(self, message, cls=ConfigError):
        return cls("layer '%s' (%s): %s" % (self.param.name, self.param.type, message))

    # -- set-up ----------------------------------------------------------
    def setup(self, bottom, top):
        self._check_counts(bottom, top)
        self.layer_setup(bottom, top)
        self.reshape(bottom, top)
        self._set_loss_weights(top)

    def _check_counts(self, bottom, top):
        def check(what, n, exact, lo, hi):
            if exact is not None and n != exact:
                raise self.error("takes %d %s blob(s), got %d" % (exact, what, n))
            if lo is not None and n < lo:
                raise self.error("takes at least %d %s blob(s), got %d" % (lo, what, n))
            if hi is not None and n > hi:
                raise self.error("takes at most %d %s blob(s), got %d" % (hi, what, n))
        check("bottom", len(bottom), self.exact_bottoms, self.min_bottoms, self.max_bottoms)
        check("top", len(top), self.exact_tops, self.min_tops, self.max_tops)

    def _set_loss_weights(self, top):
        given = list(self.param.loss_weight)
        if given and len(given) != len(top):
            raise self.error("loss_weight must be given once per top (%d tops, %d weights)"
                             % (len(top), len(given)))
        if not given:
            given = [self.default_loss_weight] + [0.0] * (len(top) - 1) if top else []
        self.loss_weights = [float(w) for w in given]
        for blob, w in zip(top, self.loss_weights):
            if w:
                blob.dev_diff[...] = w

    def layer_setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        raise NotImplementedError

    # -- running ---------------------------------------------------------
    def run_forward(self, bottom, top):
        """Reshape, compute the tops, and return this layer's weighted loss."""
        self.reshape(bottom, top)
        if self.idle(bottom, top):
            return 0.0
        self.forward(bottom, top)
        loss = 0.0
        for blob, w in zip(top, self.loss_weights):
            if w:
                loss += w * float(blob.dev_data.sum(dtype="float64"))
        return loss

    def replayable(self, bottom, top):
        """Whether this layer's last forward did nothing but run oneDNN
        primitives (plan.py may replay them then). Layers that know they do
        say so; the rest run as themselves in a prepared forward."""
        return False

    def dnnl_only(self, bottom, top):
        """replayable() of a layer whose forward is `if the oneDNN engine
        ran it: return`, then numpy."""
        return self.engine == "dnnl"

    def no_compute(self, bottom, top):
        """replayable() of a layer with nothing to compute at run time (its
        tops share the bottom's memory, or it has none)."""
        return True

    def idle(self, bottom, top):
        """True for one of our layers between empty bottoms and empty tops
        (a batch of 0): there is nothing to compute either way. A Python
        layer always runs, as in Caffe."""
        return (bool(bottom) and not any(b.count for b in bottom) and not any(t.count for t in top)
                and _REGISTRY.get(getattr(type(self), "type", None)) is type(self))

    def forward(self, bottom, top):
        raise NotImplementedError

    def backward(self, top, propagate_down, bottom):
        """Write bottom diffs where propagate_down[i]; add to param diffs."""

    def _kept(self, key, size, dtype):
        """Memory this layer keeps across iterations (the columns its backward
        reuses, a normalized copy of its input): at least `size` elements."""
        store = self.__dict__.setdefault("_kept_buffers", Buffers())
        return store.get((backend.mode(), key), size, dtype, self.xp.empty)

    def dnnl_op(self, key, build):
        """The oneDNN operation for `key` (the shapes and flags it was built
        for), made by build(dnnl) once and kept; None when this layer runs the
        numpy engine, or oneDNN cannot express this case as Caffe defines it."""
        # `engine: CAFFE` in a published prototxt keeps cuDNN off a layer on
        # the GPU; Caffe's CPU has one engine: it does not choose numpy here
        dnnl = None if backend.numpy_forced(self.param.name, self.param.type) else backend.dnnl_for()
        if dnnl is None:
            self.engine = "numpy" if backend.mode() == backend.CPU else "gpu"
            return None
        ops = self.__dict__.setdefault("_dnnl_ops", {})
        if self.__dict__.get("_dnnl_threads") != backend.threads_generation():
            ops.clear()                # made for another thread count
            self._dnnl_threads = backend.threads_generation()
        if key not in ops:
            if len(ops) >= 4:          # a net reshaped back and forth keeps a few
                ops.clear()
            try:
                ops[key] = build(dnnl)
            except dnnl.DnnlError:
                ops[key] = None
        op = ops[key]
        self.engine = "numpy" if op is None else "dnnl"
        return op

    @staticmethod
    def blocked_layout(blob, diff=False):
        """The blocked layout a oneDNN layer left `blob`'s data (or diff) in
        (its format tag), which the next oneDNN layer may take as it is; None
        when the values are in Caffe's plain layout."""
        if backend.mode() != backend.CPU:
            return None
        view = blob.engine_diff() if diff else blob.engine_data()
        desc = view.layout()
        if desc is None:
            return None
        from .kernels import dnnl
        return dnnl.blocked_tag(desc, blob.shape)

    def allow_force_backward(self, bottom_index):
        return True

    @property
    def xp(self):
        return backend.xp()

    @property
    def ops(self):
        return backend.ops()
