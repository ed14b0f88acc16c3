"""The update rules of Caffe's solvers, each as Caffe computes it in float32:
given the (normalized, regularized) gradient g, leave in g the step to subtract
from the weights and update the histories. The solver calls them on slices of
the parameters small enough to stay in cache, so each array is read from
memory once per iteration."""
import numpy as np

f32 = np.float32


class UpdateRule:
    type = None
    histories = 1          # history blobs per parameter (stored in this order in .solverstate)

    def __init__(self, param):
        self.param = param

    def compute(self, g, hist, local_rate, it):
        """g: gradient slice; hist: the matching history slices (1 or 2)."""
        raise NotImplementedError


class SGD(UpdateRule):
    type = "SGD"

    def compute(self, g, hist, local_rate, it):
        h = hist[0]
        h *= f32(self.param.momentum)
        g *= f32(local_rate)
        h += g
        g[...] = h


class Nesterov(UpdateRule):
    type = "Nesterov"

    def compute(self, g, hist, local_rate, it):
        m = f32(self.param.momentum)
        h = hist[0]
        previous = h.copy()
        h *= m
        h += f32(local_rate) * g
        g[...] = (f32(1) + m) * h - m * previous


class AdaGrad(UpdateRule):
    type = "AdaGrad"

    def compute(self, g, hist, local_rate, it):
        h = hist[0]
        h += g * g
        g[...] = f32(local_rate) * (g / (np.sqrt(h) + f32(self.param.delta)))


class RMSProp(UpdateRule):
    type = "RMSProp"

    def compute(self, g, hist, local_rate, it):
        d = f32(self.param.rms_decay)
        h = hist[0]
        h[...] = (f32(1) - d) * (g * g) + d * h
        g[...] = f32(local_rate) * (g / (np.sqrt(h) + f32(self.param.delta)))


class AdaDelta(UpdateRule):
    type = "AdaDelta"
    histories = 2

    def compute(self, g, hist, local_rate, it):
        m, delta = f32(self.param.momentum), f32(self.param.delta)
        h_grad, h_update = hist
        h_grad[...] = (f32(1) - m) * (g * g) + m * h_grad
        g *= np.sqrt((h_update + delta) / (h_grad + delta))
        h_update[...] = (f32(1) - m) * (g * g) + m * h_update
        g *= f32(local_rate)


class Adam(UpdateRule):
    type = "Adam"
    histories = 2

    def compute(self, g, hist, local_rate, it):
        b1, b2 = f32(self.param.momentum), f32(self.param.momentum2)
        t = it + 1
        # Caffe computes the bias correction in double, then stores it as float.
        correction = f32(np.sqrt(1.0 - float(b2) ** t) / (1.0 - float(b1) ** t))
        mom, var = hist
        mom[...] = (f32(1) - b1) * g + b1 * mom
        var[...] = (f32(1) - b2) * (g * g) + b2 * var
        g[...] = (f32(local_rate) * correction) * (mom / (np.sqrt(var) + f32(self.param.delta)))


RULES = {cls.type: cls for cls in (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam)}


def learning_rate(param, it, current_step):
    """(rate, current_step) for iteration `it`, as Caffe's GetLearningRate."""
    policy = param.lr_policy
    base = param.base_lr
    if policy == "fixed":
        return f32(base), current_step
    if policy == "step":
        if param.stepsize <= 0:
            raise ValueError("lr_policy step needs stepsize > 0")
        current_step = it // param.stepsize
        return f32(float(f32(base)) * float(f32(param.gamma)) ** current_step), current_step
    if policy == "exp":
        return f32(float(f32(base)) * float(f32(param.gamma)) ** it), current_step
    if policy == "inv":
        return f32(base) * np.power(f32(1) + f32(param.gamma) * f32(it), -f32(param.power)), current_step
    if policy == "multistep":
        if current_step < len(param.stepvalue) and it >= param.stepvalue[current_step]:
            current_step += 1
        return f32(float(f32(base)) * float(f32(param.gamma)) ** current_step), current_step
    if policy == "poly":
        return f32(base) * np.power(f32(1) - f32(it) / f32(param.max_iter), f32(param.power)), current_step
    if policy == "sigmoid":
        return f32(base) * (f32(1) / (f32(1) + np.exp(-f32(param.gamma) * (f32(it) - f32(param.stepsize))))), \
            current_step
    raise ValueError("unknown lr_policy '%s' (fixed, step, exp, inv, multistep, poly, sigmoid)" % policy)
