"""type: "Python" layers: python_param { module layer param_str } names a
caffe.Layer subclass; its setup/reshape/forward/backward run with the bottoms
and tops as Blobs (numpy .data/.diff), as in pycaffe."""
import importlib
import traceback

from ..layer import Layer, register


class Phase(int):
    """caffe.TRAIN or caffe.TEST as Boost.Python's enum gives it to pycaffe:
    equal to the number, str() the name."""

    def __str__(self):
        return "TRAIN" if self == 0 else "TEST"


@register("Python")
class PythonLayer(Layer):
    def layer_setup(self, bottom, top):
        p = self.param.python_param
        if not p.module or not p.layer:
            raise self.error("python_param needs module and layer")
        try:
            module = importlib.import_module(p.module)
        except ImportError as e:
            raise self.error("cannot import Python module '%s' (is its folder on PYTHONPATH?): %s"
                             % (p.module, e)) from None
        cls = getattr(module, p.layer, None)
        if cls is None:
            raise self.error("module '%s' has no class '%s'" % (p.module, p.layer))
        self.impl = cls(self.param)
        # param_str_ and a phase whose str() is its name: what py-faster-rcnn's
        # layers read (rbgirshick's pycaffe exposes them so)
        self.impl.param_str = self.impl.param_str_ = p.param_str
        self.impl.phase = Phase(self.phase)
        self.impl.share_in_parallel = p.share_in_parallel
        self._call("setup", bottom, top)
        self.blobs = self.impl.blobs

    def _call(self, method, *args):
        """Runs the user's method. An exception it raises reaches the caller
        as it is (same type, as in pycaffe), with a note naming the layer."""
        try:
            return getattr(self.impl, method)(*args)
        except Exception as e:
            where = traceback.extract_tb(e.__traceback__)[-1]
            e.add_note("in Python layer '%s' (%s.%s.%s, %s:%d)" % (
                self.param.name, self.param.python_param.module, self.param.python_param.layer, method,
                where.filename, where.lineno))
            raise

    def reshape(self, bottom, top):
        self._call("reshape", bottom, top)

    def forward(self, bottom, top):
        self._call("forward", bottom, top)

    def backward(self, top, propagate_down, bottom):
        self._call("backward", top, propagate_down, bottom)
