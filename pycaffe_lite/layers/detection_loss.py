"""The detection forks' losses: SmoothL1Loss (SSD's and Faster R-CNN's)."""
import numpy as np

from ..errors import ShapeError
from ..layer import Layer, register


@register("SmoothL1Loss")
class SmoothL1LossLayer(Layer):
    """sum(f(w_in * (p - t)) * w_out) / N with f(d) = 0.5 sigma^2 d^2 where
    |d| < 1 / sigma^2, else |d| - 0.5 / sigma^2. Two bottoms (prediction,
    target) as in SSD's fork, where sigma is 1; Faster R-CNN's fork adds
    smooth_l1_loss_param's sigma and inside and outside weights (both, as
    third and fourth bottoms). N is the first axis."""
    min_bottoms = 2
    max_bottoms = 4
    exact_tops = 1
    default_loss_weight = 1.0

    def layer_setup(self, bottom, top):
        if len(bottom) == 3:
            raise self.error("takes inside and outside weights together (4 bottoms), or none (2), got 3")
        self.sigma2 = np.float32(self.param.smooth_l1_loss_param.sigma) ** 2
        if not self.sigma2 > 0:
            raise self.error("smooth_l1_loss_param sigma must not be 0")

    def reshape(self, bottom, top):
        for b in bottom[1:]:
            if b.count != bottom[0].count:
                raise self.error("bottoms must hold as many values as the prediction %s, got %s"
                                 % (bottom[0].shape, b.shape), ShapeError)
        top[0].reshape(())

    def forward(self, bottom, top):
        xp = self.xp
        d = bottom[0].dev_data - bottom[1].dev_data.reshape(bottom[0].shape)
        if len(bottom) == 4:
            d = d * bottom[2].dev_data.reshape(d.shape)
        self._d = d
        a = xp.abs(d)
        inv = np.float32(1) / self.sigma2
        err = xp.where(a < inv, np.float32(0.5) * self.sigma2 * d * d, a - np.float32(0.5) * inv)
        if len(bottom) == 4:
            err = err * bottom[3].dev_data.reshape(d.shape)
        n = max(bottom[0].shape[0] if bottom[0].num_axes else 1, 1)
        top[0].dev_data[...] = xp.abs(err).sum() / n

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        d = self._d
        inv = np.float32(1) / self.sigma2
        g = xp.where(xp.abs(d) < inv, self.sigma2 * d, xp.sign(d))
        n = max(bottom[0].shape[0] if bottom[0].num_axes else 1, 1)
        scale = top[0].dev_diff.reshape(()) / n
        if len(bottom) == 4:
            g = g * bottom[2].dev_data.reshape(d.shape) * bottom[3].dev_data.reshape(d.shape)
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                bottom[i].dev_diff[...] = (g * (scale * np.float32(sign))).reshape(bottom[i].shape)

    def allow_force_backward(self, bottom_index):
        return bottom_index < 2
