"""InnerProduct: a fully connected layer over the axes from `axis` on."""
from ..blob import Blob
from ..errors import ShapeError
from ..filler import fill
from ..layer import Layer, register


@register("InnerProduct")
class InnerProductLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.inner_product_param
        if not p.num_output:
            raise self.error("inner_product_param needs num_output > 0")
        self.n_out = int(p.num_output)
        self.axis = bottom[0].canonical_axis(p.axis)
        self.k = bottom[0].count_range(self.axis)
        self.transpose = p.transpose
        shape = (self.k, self.n_out) if self.transpose else (self.n_out, self.k)
        self.blobs = [Blob(shape)]
        fill(self.blobs[0], p.weight_filler)
        if p.bias_term:
            self.blobs.append(Blob((self.n_out,)))
            fill(self.blobs[1], p.bias_filler)

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.count_range(self.axis) != self.k:
            raise self.error("input %s has %d values per row from axis %d; the weights expect %d"
                             % (b.shape, b.count_range(self.axis), self.axis, self.k), ShapeError)
        top[0].reshape(b.shape[:self.axis] + (self.n_out,))
        self.m = b.count_range(0, self.axis)      # rows, given explicitly: reshape(-1, 0) cannot size them

    def _weight_t(self):
        """The weight as (K, N_out)."""
        w = self.blobs[0].dev_data
        return w if self.transpose else w.T

    def _dnnl(self, bottom):
        m = bottom[0].count_range(0, self.axis)
        if not m or not self.k:        # an empty product: numpy's matmul gives the bias alone, as Caffe's GEMM
            return None
        training = self.need_backward
        bias = len(self.blobs) > 1
        return self.dnnl_op((m, training), lambda dnnl: dnnl.InnerProduct(
            m, self.k, self.n_out, self.transpose, bias, training))

    def forward(self, bottom, top):
        op = self._dnnl(bottom)
        if op is not None:
            op.forward(bottom[0].dev_data.reshape(self.m, self.k), self.blobs[0].dev_data,
                       self.blobs[1].dev_data if len(self.blobs) > 1 else None,
                       top[0].dev_data.reshape(self.m, self.n_out))
            return
        x = bottom[0].dev_data.reshape(self.m, self.k)
        y = top[0].dev_data.reshape(self.m, self.n_out)
        self.xp.matmul(x, self._weight_t(), out=y)
        if len(self.blobs) > 1:
            y += self.blobs[1].dev_data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].dev_diff.reshape(self.m, self.n_out)
        x = bottom[0].dev_data.reshape(self.m, self.k)
        op = self._dnnl(bottom)
        if op is not None and op.bwd_data is not None:
            want_b = len(self.blobs) > 1 and self.param_propagate_down[1]
            if self.param_propagate_down[0]:
                dw, fresh = self.blobs[0].host_diff_to_fill()
                op.backward_weights(x, dy, dw, None, not fresh, False)
            if want_b:
                self.blobs[1].dev_diff[...] += dy.sum(axis=0)
            if propagate_down[0]:
                op.backward_data(dy, self.blobs[0].dev_data, bottom[0].dev_diff.reshape(self.m, self.k))
            return
        if self.param_propagate_down[0]:
            if self.transpose:
                self.blobs[0].add_matmul_to_diff(x.T, dy)
            else:
                self.blobs[0].add_matmul_to_diff(dy.T, x)
        if len(self.blobs) > 1 and self.param_propagate_down[1]:
            self.blobs[1].dev_diff[...] += dy.sum(axis=0)
        if propagate_down[0]:
            w = self.blobs[0].dev_data
            self.xp.matmul(dy, w.T if self.transpose else w, out=bottom[0].dev_diff.reshape(self.m, self.k))
