"""pycaffe's Detector: run a classification net over windows of images (the
R-CNN recipe). Windows are (ymin, xmin, ymax, xmax); with context_pad each
window is enlarged so that, once warped to the net's input, context_pad
pixels of surroundings show on each side (filled with the mean where the
enlarged box leaves the image)."""


import numpy as np

from . import io
from .classifier import input_transformer
from .net import TEST, Net


class Detector(Net):
    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None, context_pad=None):
        Net.__init__(self, model_file, pretrained_file, TEST)
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """[(image file, [window, ...]), ...] -> one dict per window with its
        'filename', 'window' and the net's 'prediction'."""
        images_windows = [(name, list(windows)) for name, windows in images_windows]
        crops = []
        for name, windows in images_windows:
            image = io.load_image(name).astype(np.float32)
            for window in windows:
                crops.append(self.crop(image, window, name))
        if not crops:
            return []
        in_ = self.inputs[0]
        caffe_in = np.zeros((len(crops), crops[0].shape[2]) + tuple(self.blobs[in_].data.shape[2:]), np.float32)
        for i, crop in enumerate(crops):
            caffe_in[i] = self.transformer.preprocess(in_, crop)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        out, i = [], 0
        for name, windows in images_windows:
            for window in windows:
                out.append({"window": window, "prediction": predictions[i], "filename": name})
                i += 1
        return out

    def detect_selective_search(self, image_fnames):
        raise RuntimeError("detect_selective_search needs selective search proposals, which come from MATLAB "
                           "(selective_search_ijcv_with_python); compute the windows elsewhere and call "
                           "detect_windows([(image, windows), ...]) with them")

    def crop(self, im, window, source="image"):
        """The window (ymin, xmin, ymax, xmax) of im (H x W x K), cut as numpy
        slices it (as pycaffe does: a window reaching past the image is cut
        at its border), with context when context_pad is set."""
        h, w = im.shape[:2]
        y0, x0, y1, x1 = (int(v) for v in window[:4])
        crop = im[y0:y1, x0:x1]
        if not crop.size:
            raise ValueError("window %s (ymin, xmin, ymax, xmax) holds no pixel of %s, which is %dx%d "
                             "(height x width)" % ([y0, x0, y1, x1], source, h, w))
        if not self.context_pad:
            return crop
        size = self.blobs[self.inputs[0]].width          # square inputs, as in pycaffe
        scale = size / (1.0 * size - self.context_pad * 2)
        half_h, half_w = (y1 - y0 + 1) / 2.0, (x1 - x0 + 1) / 2.0
        center = np.array((y0 + half_h, x0 + half_w))
        box = np.round(np.tile(center, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        scale_h, scale_w = size / (box[2] - box[0] + 1), size / (box[3] - box[1] + 1)
        pad_y, pad_x = int(round(max(0, -box[0]) * scale_h)), int(round(max(0, -box[1]) * scale_w))
        box = np.clip(box, 0.0, [h, w, h, w])
        crop_h = int(round((box[2] - box[0] + 1) * scale_h))
        crop_w = int(round((box[3] - box[1] + 1) * scale_w))
        crop_h, crop_w = min(crop_h, size - pad_y), min(crop_w, size - pad_x)
        b = box.astype(int)
        context = io.resize_image(im[b[0]:b[2], b[1]:b[3]], (crop_h, crop_w))
        out = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        out[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context
        return out

    def configure_crop(self, context_pad):
        """Crop size (H, W, K) from the net input; with context_pad, the mean in
        image space for the padding."""
        in_ = self.inputs[0]
        order = self.transformer.transpose[in_]
        inverse = [order[t] for t in order]
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inverse]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = np.array(mean, dtype=np.float32).transpose(inverse)
        swap = self.transformer.channel_swap.get(in_)
        if swap is not None:
            crop_mean = crop_mean[:, :, [list(swap).index(i) for i in range(crop_mean.shape[2])]]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean /= raw_scale
        self.crop_mean = crop_mean



