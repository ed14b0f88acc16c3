"""Recurrent layers as Caffe builds them: LSTMUnit (one step of an LSTM), and
LSTM and RNN, which unroll an ordinary inner Net over the T time steps of
their input (Caffe's layer and blob names, parameters shared across steps by
name), so forward and backward are the Net's own."""
import numpy as np

from ..errors import ShapeError
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb


@register("LSTMUnit")
class LSTMUnitLayer(Layer):
    """c = cont * f * c_prev + i * g, h = o * tanh(c), gates in the order i, f, o, g."""
    exact_bottoms = 3
    exact_tops = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        c_prev, x, cont = bottom
        if c_prev.num_axes != 3 or c_prev.shape[0] != 1:
            raise self.error("c_prev must be (1, N, H), got %s" % (c_prev.shape,), ShapeError)
        n, h = c_prev.shape[1:]
        if x.shape != (1, n, 4 * h):
            raise self.error("the gate input must be (1, %d, %d) for c_prev %s, got %s"
                             % (n, 4 * h, c_prev.shape, x.shape), ShapeError)
        if cont.shape != (1, n):
            raise self.error("cont must be (1, %d), got %s" % (n, cont.shape), ShapeError)
        self.n, self.h = n, h
        for t in top:
            t.reshape_like(c_prev)

    def _inputs(self, bottom):
        c_prev, x, cont = bottom
        return (c_prev.dev_data.reshape(self.n, self.h), x.dev_data.reshape(self.n, 4 * self.h),
                cont.dev_data.reshape(self.n))

    def forward(self, bottom, top):
        c, h = self.ops.lstm_unit_forward(*self._inputs(bottom))
        top[0].dev_data[...] = c.reshape(top[0].shape)
        top[1].dev_data[...] = h.reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise self.error("cannot backpropagate to the sequence indicators (cont); set propagate_down: false")
        if not (propagate_down[0] or propagate_down[1]):
            return
        shape = (self.n, self.h)
        dc_prev, dx = self.ops.lstm_unit_backward(*self._inputs(bottom), top[0].dev_data.reshape(shape),
                                                  top[0].dev_diff.reshape(shape), top[1].dev_diff.reshape(shape))
        if propagate_down[0]:
            bottom[0].dev_diff[...] = dc_prev.reshape(bottom[0].shape)
        if propagate_down[1]:
            bottom[1].dev_diff[...] = dx.reshape(bottom[1].shape)


def _layer(net, type_, name, bottoms=(), tops=(), params=(), **fields):
    layer = net.layer.add(type=type_, name=name)
    layer.bottom.extend(bottoms)
    layer.top.extend(tops)
    for p in params:
        layer.param.add(name=p)
    for field, value in fields.items():
        getattr(layer, field).CopyFrom(value)
    return layer


def _shape(dims):
    return pb.BlobShape(dim=list(dims))


class _RecurrentLayer(Layer):
    """x (T, N, ...), cont (T, N), optional x_static (N, ...), and with
    expose_hidden the initial state blobs; tops: the output sequence, and with
    expose_hidden the final state blobs."""
    min_bottoms = 2
    min_tops = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    # Subclasses: recur_inputs, recur_outputs, output names; fill_unrolled(net).
    def layer_setup(self, bottom, top):
        from ..net import Net
        p = self.param.recurrent_param
        if not p.num_output:
            raise self.error("recurrent_param needs num_output > 0")
        self.hidden = int(p.num_output)
        x, cont = bottom[0], bottom[1]
        if x.num_axes < 2:
            raise self.error("x must be (T, N, ...), got %s" % (x.shape,), ShapeError)
        self.T, self.N = x.shape[:2]
        self._check_cont(bottom)
        self.expose = p.expose_hidden
        n_recur = len(self.recur_inputs)
        self.static = len(bottom) > 2 + (n_recur if self.expose else 0)
        expected_bottoms = 2 + self.static + (n_recur if self.expose else 0)
        if len(bottom) != expected_bottoms:
            raise self.error("takes x, cont%s%s as bottoms (%d), got %d"
                             % (", x_static" if self.static else "", ", " + ", ".join(self.recur_inputs)
                                if self.expose else "", expected_bottoms, len(bottom)))
        if len(top) != 1 + (n_recur if self.expose else 0):
            raise self.error("has %d top(s) (%s%s), got %d" % (
                1 + (n_recur if self.expose else 0), self.output,
                ", " + ", ".join(self.recur_outputs) if self.expose else "", len(top)))
        if self.static and (bottom[2].num_axes < 1 or bottom[2].shape[0] != self.N):
            raise self.error("x_static must be (N, ...) with N = %d, got %s" % (self.N, bottom[2].shape),
                             ShapeError)
        net = pb.NetParameter()
        inputs = _layer(net, "Input", "", tops=["x", "cont"] + (["x_static"] if self.static else []))
        for b in bottom[:2 + self.static]:
            inputs.input_param.shape.add().CopyFrom(_shape(b.shape))
        self.fill_unrolled(net)
        if self.param.name:
            for layer in net.layer:
                layer.name = self.param.name + "_" + layer.name
        # A pseudo-loss on the output makes the inner net back-propagate; it is
        # never run (Caffe's trick, kept so the inner net has Caffe's layers).
        _layer(net, "Reduction", self.output + "_pseudoloss", [self.output], [self.output + "_pseudoloss"]
               ).loss_weight.append(1)
        state = pb.NetState(phase=self.phase)
        self.net = Net._from_param(net, state, "layer '%s' (%s), unrolled" % (self.param.name, self.type))
        self._last = len(self.net.layers) - 2
        self.blobs = list(self.net.learnable_params)
        self._inner_params = list(self.blobs)
        self._shapes = None

    def _check_cont(self, bottom):
        x, cont = bottom[0], bottom[1]
        if cont.num_axes != 2 or cont.shape != x.shape[:2]:
            raise self.error("cont must be (T, N) = %s to match x %s, got %s; give one 0/1 value per time step "
                             "and stream" % (x.shape[:2], x.shape, cont.shape), ShapeError)

    def reshape(self, bottom, top):
        x = bottom[0]
        if x.shape[0] != self.T:
            raise self.error("the number of time steps changed from %d to %d; build a new net for another T"
                             % (self.T, x.shape[0]), ShapeError)
        self.N = x.shape[1]
        self._check_cont(bottom)
        blobs = self.net.blobs
        shapes = tuple(b.shape for b in bottom)
        if shapes != self._shapes:
            for name, b in zip(["x", "cont", "x_static"], bottom[:2 + self.static]):
                blobs[name].reshape(b.shape)
            for name in self.recur_inputs:
                blobs[name].reshape((1, self.N, self.hidden))
            self.net.reshape()
            self._shapes = shapes
        for name, b in zip(["x", "cont", "x_static"], bottom[:2 + self.static]):
            blobs[name].share_data(b)
            if name != "cont":
                blobs[name].share_diff(b)
        if self.expose:
            for name, b in zip(self.recur_inputs, bottom[2 + self.static:]):
                if b.shape != blobs[name].shape:
                    raise self.error("%s must be %s, got %s" % (name, blobs[name].shape, b.shape), ShapeError)
                blobs[name].share_data(b)
        out = blobs[self.output]
        top[0].reshape_like(out)
        top[0].share_data(out)
        top[0].share_diff(out)
        for t, name in zip(top[1:], self.recur_outputs):
            t.reshape_like(blobs[name])

    def _relink(self):
        """Use the layer's blobs inside the unrolled net when the outer net has
        replaced them (a test net sharing the train net's weights)."""
        swap = {id(old): new for old, new in zip(self._inner_params, self.blobs) if old is not new}
        if not swap:
            return
        for layer in self.net.layers:
            layer.blobs[:] = [swap.get(id(b), b) for b in layer.blobs]
        self.net._relink_params()
        self._inner_params = list(self.blobs)

    def forward(self, bottom, top):
        self._relink()
        blobs = self.net.blobs
        if not self.expose:
            # The state carries over from the previous call (zero at first).
            for src, dst in zip(self.recur_outputs, self.recur_inputs):
                blobs[dst].dev_data[...] = blobs[src].dev_data
        self.net.forward_from_to(0, self._last)
        for t, name in zip(top[1:], self.recur_outputs):
            t.share_data(blobs[name])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the sequence indicators (cont); set propagate_down: false")
        self.net.backward_from_to(self._last, 0)

    def carried_state(self):
        """The blobs the next forward starts from (kept in our solverstate, so
        a resumed run continues its sequences exactly)."""
        return [self.net.blobs[name] for name in self.recur_outputs]


def _inner_product(num_output, axis, weight_filler, bias_filler=None):
    if num_output > 2 ** 31 - 1:
        raise ShapeError("num_output makes the unrolled net's InnerProduct %d wide, more than a blob axis holds "
                         "(2147483647)" % num_output)
    p = pb.InnerProductParameter(num_output=num_output, axis=axis, bias_term=bias_filler is not None)
    p.weight_filler.CopyFrom(weight_filler)
    if bias_filler is not None:
        p.bias_filler.CopyFrom(bias_filler)
    return p


def _add_input_transforms(layer, net, weight, bias, width):
    """The layers LSTM and RNN share, with Caffe's names: cont sliced by time
    step, the input transformed for all steps at once (`weight`_x) and sliced,
    and the static input's transform reshaped to broadcast over time."""
    p = layer.param.recurrent_param
    cont_slice = _layer(net, "Slice", "cont_slice", ["cont"], slice_param=pb.SliceParameter(axis=0))
    _layer(net, "InnerProduct", "x_transform", ["x"], [weight + "_x"], [weight, bias],
           inner_product_param=_inner_product(width, 2, p.weight_filler, p.bias_filler)).propagate_down.append(True)
    if layer.static:
        static = weight + "_x_static"
        _layer(net, "InnerProduct", static, ["x_static"], [static + "_preshape"], [weight + "_static"],
               inner_product_param=_inner_product(width, 1, p.weight_filler)).propagate_down.append(True)
        _layer(net, "Reshape", static + "_reshape", [static + "_preshape"], [static],
               reshape_param=pb.ReshapeParameter(shape=_shape((1, -1, width))))
    x_slice = _layer(net, "Slice", weight + "_x_slice", [weight + "_x"], slice_param=pb.SliceParameter(axis=0))
    return cont_slice, x_slice


@register("LSTM")
class LSTMLayer(_RecurrentLayer):
    recur_inputs = ["h_0", "c_0"]
    output = "h"

    @property
    def recur_outputs(self):
        return ["h_%d" % self.T, "c_T"]

    def fill_unrolled(self, net):
        p = self.param.recurrent_param
        H, T = self.hidden, self.T
        state = _layer(net, "Input", "", tops=["c_0", "h_0"])
        for _ in range(2):
            state.input_param.shape.add().CopyFrom(_shape((1, self.N, H)))
        cont_slice, x_slice = _add_input_transforms(self, net, "W_xc", "b_c", 4 * H)
        concat = pb.LayerParameter(name="h_concat", type="Concat", top=["h"], concat_param=pb.ConcatParameter(axis=0))
        for t in range(1, T + 1):
            cont_slice.top.append("cont_%d" % t)
            x_slice.top.append("W_xc_x_%d" % t)
            _layer(net, "Scale", "h_conted_%d" % (t - 1), ["h_%d" % (t - 1), "cont_%d" % t], ["h_conted_%d" % (t - 1)],
                   scale_param=pb.ScaleParameter(axis=0))
            _layer(net, "InnerProduct", "transform_%d" % t, ["h_conted_%d" % (t - 1)], ["W_hc_h_%d" % (t - 1)],
                   ["W_hc"], inner_product_param=_inner_product(4 * H, 2, p.weight_filler))
            _layer(net, "Eltwise", "gate_input_%d" % t,
                   ["W_hc_h_%d" % (t - 1), "W_xc_x_%d" % t] + (["W_xc_x_static"] if self.static else []),
                   ["gate_input_%d" % t])
            _layer(net, "LSTMUnit", "unit_%d" % t, ["c_%d" % (t - 1), "gate_input_%d" % t, "cont_%d" % t],
                   ["c_%d" % t, "h_%d" % t])
            concat.bottom.append("h_%d" % t)
        _layer(net, "Split", "", ["c_%d" % T], ["c_T"])
        net.layer.add().CopyFrom(concat)


@register("RNN")
class RNNLayer(_RecurrentLayer):
    recur_inputs = ["h_0"]
    output = "o"

    @property
    def recur_outputs(self):
        return ["h_%d" % self.T]

    def fill_unrolled(self, net):
        p = self.param.recurrent_param
        H, T = self.hidden, self.T
        _layer(net, "Input", "", tops=["h_0"]).input_param.shape.add().CopyFrom(_shape((1, self.N, H)))
        cont_slice, x_slice = _add_input_transforms(self, net, "W_xh", "b_h", H)
        concat = pb.LayerParameter(name="o_concat", type="Concat", top=["o"], concat_param=pb.ConcatParameter(axis=0))
        for t in range(1, T + 1):
            cont_slice.top.append("cont_%d" % t)
            x_slice.top.append("W_xh_x_%d" % t)
            _layer(net, "Scale", "h_conted_%d" % (t - 1), ["h_%d" % (t - 1), "cont_%d" % t], ["h_conted_%d" % (t - 1)],
                   scale_param=pb.ScaleParameter(axis=0))
            _layer(net, "InnerProduct", "W_hh_h_%d" % (t - 1), ["h_conted_%d" % (t - 1)], ["W_hh_h_%d" % (t - 1)],
                   ["W_hh"], inner_product_param=_inner_product(H, 2, p.weight_filler))
            _layer(net, "Eltwise", "h_input_sum_%d" % t,
                   ["W_hh_h_%d" % (t - 1), "W_xh_x_%d" % t] + (["W_xh_x_static"] if self.static else []),
                   ["h_neuron_input_%d" % t])
            _layer(net, "TanH", "h_neuron_%d" % t, ["h_neuron_input_%d" % t], ["h_%d" % t])
            _layer(net, "InnerProduct", "W_ho_h_%d" % t, ["h_%d" % t], ["W_ho_h_%d" % t], ["W_ho", "b_o"],
                   inner_product_param=_inner_product(H, 2, p.weight_filler, p.bias_filler))
            _layer(net, "TanH", "o_neuron_%d" % t, ["W_ho_h_%d" % t], ["o_%d" % t])
            concat.bottom.append("o_%d" % t)
        net.layer.add().CopyFrom(concat)
