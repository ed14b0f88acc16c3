"""Layers that change the spatial size: Interp (DeepLab, PSPNet: bilinear
with aligned corners) and Upsample (SegNet: max unpooling by a mask)."""
from ..errors import ShapeError
from ..layer import Layer, register


@register("Interp")
class InterpLayer(Layer):
    """Bilinear resize whose corner pixels stay put (DeepLab's interp2),
    after cropping -pad_beg / -pad_end pixels. The output size comes from
    zoom_factor, shrink_factor, both, height and width, or a second bottom."""
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.interp_param
        if p.pad_beg > 0 or p.pad_end > 0:
            raise self.error("pad_beg and pad_end crop: they must be 0 or negative, got %d and %d"
                             % (p.pad_beg, p.pad_end))
        given = [f for f in ("zoom_factor", "shrink_factor", "height", "width") if p.HasField(f)]
        if len(bottom) > 1 and given:
            raise self.error("takes its size from the second bottom or from %s, not both" % ", ".join(given))
        if len(bottom) == 1 and not (p.HasField("zoom_factor") or p.HasField("shrink_factor")
                                     or (p.HasField("height") and p.HasField("width"))):
            raise self.error("interp_param needs zoom_factor, shrink_factor, or height and width")
        if p.HasField("zoom_factor") and p.zoom_factor < 1:
            raise self.error("zoom_factor must be at least 1, got %d" % p.zoom_factor)
        if p.HasField("shrink_factor") and p.shrink_factor < 1:
            raise self.error("shrink_factor must be at least 1, got %d" % p.shrink_factor)

    def reshape(self, bottom, top):
        p = self.param.interp_param
        if bottom[0].num_axes != 4:
            raise self.error("needs a 4-axis bottom, got %s" % (bottom[0].shape,), ShapeError)
        n, c, h, w = bottom[0].shape
        eh, ew = h + p.pad_beg + p.pad_end, w + p.pad_beg + p.pad_end
        if len(bottom) > 1:
            oh, ow = bottom[1].shape[2:4]
        elif p.HasField("shrink_factor") or p.HasField("zoom_factor"):
            oh, ow = eh, ew
            if p.HasField("shrink_factor"):
                oh, ow = (oh - 1) // p.shrink_factor + 1, (ow - 1) // p.shrink_factor + 1
            if p.HasField("zoom_factor"):
                oh, ow = oh + (oh - 1) * (p.zoom_factor - 1), ow + (ow - 1) * (p.zoom_factor - 1)
        else:
            oh, ow = p.height, p.width
        if min(eh, ew, oh, ow) <= 0:
            raise self.error("sizes must be positive: input %s cropped to %dx%d, output %dx%d"
                             % (bottom[0].shape, eh, ew, oh, ow), ShapeError)
        self.crop = (-p.pad_beg, eh, ew)
        top[0].reshape((n, c, oh, ow))

    def forward(self, bottom, top):
        top[0].dev_data[...] = self.ops.interp_forward(bottom[0].dev_data, self.crop, top[0].shape[2:])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].dev_diff[...] = self.ops.interp_backward(top[0].dev_diff, bottom[0].shape, self.crop)
        if len(propagate_down) > 1 and propagate_down[1]:
            raise self.error("the size bottom gets no gradient; set propagate_down: false for it")

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0


@register("Upsample")
class UpsampleLayer(Layer):
    """SegNet's unpooling: each input value goes to the position its MAX
    pooling mask (the pooling layer's second top) names, the rest is 0.
    With one bottom, the YOLOv3 ports' nearest-neighbour upsampling by
    scale (each value repeated scale x scale times)."""
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.upsample_param
        if p.HasField("upsample_h") and p.HasField("upsample_w"):
            self.size = (int(p.upsample_h), int(p.upsample_w))
            if min(self.size) <= 1:
                raise self.error("upsample_h and upsample_w must be above 1, got %s" % (self.size,))
            return
        if p.HasField("scale") and (p.HasField("scale_h") or p.HasField("scale_w")):
            raise self.error("give scale, or scale_h and scale_w, or upsample_h and upsample_w")
        if p.HasField("scale_h") != p.HasField("scale_w"):
            raise self.error("scale_h and scale_w go together")
        self.size = None
        self.scale = (p.scale_h, p.scale_w) if p.HasField("scale_h") else (p.scale, p.scale)
        if min(self.scale) <= 1:
            raise self.error("the scale must be above 1, got %s" % (self.scale,))
        if (p.pad_out_h and self.scale[0] != 2) or (p.pad_out_w and self.scale[1] != 2):
            raise self.error("pad_out_h / pad_out_w need a scale of 2")

    def reshape(self, bottom, top):
        p = self.param.upsample_param
        if bottom[0].num_axes != 4 or (len(bottom) > 1 and bottom[1].shape != bottom[0].shape):
            raise self.error("needs a 4-axis bottom and a mask of its shape, got %s"
                             % " and ".join(str(b.shape) for b in bottom), ShapeError)
        n, c, h, w = bottom[0].shape
        if len(bottom) == 1:
            if self.size is not None:
                raise self.error("with one bottom (nearest upsampling) give scale, not upsample_h/upsample_w")
            size = (h * self.scale[0], w * self.scale[1])
        else:
            size = self.size or (h * self.scale[0] - int(p.pad_out_h), w * self.scale[1] - int(p.pad_out_w))
        top[0].reshape((n, c) + tuple(size))

    def forward(self, bottom, top):
        if len(bottom) == 1:
            sh, sw = self.scale
            top[0].dev_data[...] = self.xp.repeat(self.xp.repeat(bottom[0].dev_data, sh, axis=2), sw, axis=3)
            return
        top[0].dev_data[...] = self._checked(self.ops.upsample_forward(
            bottom[0].dev_data, bottom[1].dev_data, top[0].shape[2:]))

    def backward(self, top, propagate_down, bottom):
        if len(bottom) == 1:
            if propagate_down[0]:
                n, c, h, w = bottom[0].shape
                sh, sw = self.scale
                bottom[0].dev_diff[...] = top[0].dev_diff.reshape(n, c, h, sh, w, sw).sum(axis=(3, 5))
            return
        if propagate_down[0]:
            bottom[0].dev_diff[...] = self.ops.upsample_backward(top[0].dev_diff, bottom[1].dev_data)
        if propagate_down[1]:
            raise self.error("the mask gets no gradient; set propagate_down: false for it")

    def _checked(self, result):
        y, bad = result
        if bad:
            raise self.error("a mask index is outside the %dx%d output: the scale does not match the pooling "
                             "layer that made the mask" % tuple(y.shape[2:]), ShapeError)
        return y

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0
