"""WindowData: R-CNN style batches of windows cut out of images, as Caffe's
WindowDataLayer: a window file lists boxes with their class and overlap;
each batch draws background windows then foreground windows (with
replacement), warps each to crop_size (optionally with context padding or a
square box), mirrors at random, subtracts the mean and scales."""
import math
import os

import numpy as np

from .. import backend, glog
from ..data.transformer import load_mean_file
from ..errors import FormatError, ShapeError
from ..layer import register
from .data import _PrefetchingLayer


def _round(v):
    """C's round(): halves away from zero."""
    return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))


def read_window_file(path, root_folder=""):
    """[(image path, (C, H, W), [(class, overlap, x1, y1, x2, y2, line), ...])]."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise FormatError("%s: cannot read the window file: %s" % (path, e.strerror)) from None
    tokens = [(tok, number) for number, line in enumerate(text.splitlines(), start=1) for tok in line.split()]
    if not tokens:
        raise FormatError("%s: the window file is empty" % path)
    pos = [0]

    def take(kind, what):
        if pos[0] >= len(tokens):
            raise FormatError("%s:%d: the file ends where %s was expected" % (path, tokens[-1][1], what))
        tok, number = tokens[pos[0]]
        pos[0] += 1
        try:
            return kind(tok), number
        except ValueError:
            raise FormatError("%s:%d: expected %s, got %r" % (path, number, what, tok)) from None

    images = []
    while pos[0] < len(tokens):
        mark, number = take(str, "'# <image index>'")
        if mark != "#":
            raise FormatError("%s:%d: expected '# <image index>' to start an image block, got %r"
                              % (path, number, mark))
        take(int, "the image index")
        name, _ = take(str, "the image path")
        size = tuple(take(int, what)[0] for what in ("the channel count", "the image height", "the image width"))
        count, _ = take(int, "the number of windows")
        windows = []
        for _ in range(count):
            label, number = take(int, "a window's class")
            overlap = take(float, "a window's overlap")[0]
            x1, y1, x2, y2 = (take(int, "a window coordinate")[0] for _ in range(4))
            windows.append((label, overlap, x1, y1, x2, y2, number))
        images.append((root_folder + name, size, windows))
    return images


@register("WindowData")
class WindowDataLayer(_PrefetchingLayer):
    def layer_setup(self, bottom, top):
        p = self.param.window_data_param
        t = self.param.transform_param
        self.rng = np.random.default_rng(int(backend.rng().integers(0, 2 ** 63)))
        self.records_read = 0
        self._prefetch = None
        if not p.source:
            raise self.error("window_data_param needs a source (the window file)")
        if not p.batch_size:
            raise self.error("window_data_param needs batch_size > 0")
        self.crop = int(t.crop_size)
        if self.crop <= 0:
            raise self.error("WindowData needs transform_param { crop_size } > 0 (the size windows are warped to)")
        if 2 * p.context_pad >= self.crop:
            raise self.error("context_pad %d leaves nothing of a %d crop" % (p.context_pad, self.crop))
        if p.crop_mode not in ("warp", "square"):
            raise self.error("crop_mode must be 'warp' or 'square', got '%s'" % p.crop_mode)
        try:
            images = read_window_file(p.source, p.root_folder)
        except FormatError as e:
            raise self.error(str(e), FormatError) from None
        self.images, self.fg, self.bg = [], [], []
        for index, (path, size, windows) in enumerate(images):
            if not os.path.isfile(path):
                line = windows[0][6] if windows else 0
                raise self.error("%s: image %d (%s) does not exist (window file block before line %d; paths are "
                                 "root_folder + the listed path)" % (p.source, index, path, line), FormatError)
            self.images.append(os.path.abspath(path))    # the prefetch thread must not depend on the cwd
            for label, overlap, x1, y1, x2, y2, line in windows:
                entry = (index, label, overlap, x1, y1, x2, y2, line)
                if overlap >= p.fg_threshold:
                    if label <= 0:
                        raise self.error("%s:%d: a foreground window (overlap %g >= fg_threshold %g) needs a class "
                                         "> 0, got %d" % (p.source, line, overlap, p.fg_threshold, label),
                                         FormatError)
                    self.fg.append(entry)
                elif overlap < p.bg_threshold:
                    self.bg.append((index, 0, 0.0, x1, y1, x2, y2, line))
        channels = images[-1][1][0]
        if channels != 3:
            raise self.error("%s: WindowData decodes images as 3-channel colour, but the file says %d channels"
                             % (p.source, channels), FormatError)
        self.batch_size = int(p.batch_size)
        self.num_fg = int(np.float32(self.batch_size) * np.float32(p.fg_fraction))
        for need, pool, what in ((self.batch_size - self.num_fg, self.bg, "background"),
                                 (self.num_fg, self.fg, "foreground")):
            if need and not pool:
                raise self.error("%s lists no %s window (overlap %s), but each batch takes %d"
                                 % (p.source, what, ">= %g" % p.fg_threshold if what == "foreground"
                                    else "< %g" % p.bg_threshold, need), FormatError)
        glog.info("WindowData %s: %d images, %d foreground and %d background windows", self.name,
                 len(self.images), len(self.fg), len(self.bg))
        self.mean_image = self.mean_values = None
        if t.HasField("mean_file") and len(t.mean_value):
            raise self.error("give either mean_file or mean_value, not both")
        if t.HasField("mean_file"):
            self.mean_image = load_mean_file(t.mean_file)
            if self.mean_image.shape[1] != self.mean_image.shape[2] or self.mean_image.shape[1] < self.crop:
                raise self.error("mean_file %s must be square and at least crop_size (%d), got %s"
                                 % (t.mean_file, self.crop, self.mean_image.shape), ShapeError)
        elif len(t.mean_value):
            if len(t.mean_value) not in (1, channels):
                raise self.error("give 1 mean_value or one per channel (%d)" % channels)
            self.mean_values = np.resize(np.asarray(t.mean_value, np.float32), channels)
        self._cache = {}
        if p.cache_images:
            for i in range(len(self.images)):
                self._image(i)
        top[0].reshape((self.batch_size, channels, self.crop, self.crop))
        top[1].reshape((self.batch_size,))

    def rewind(self, records_read):
        pass    # windows are drawn at random: only the random state matters

    def _image(self, index):
        img = self._cache.get(index)
        if img is None:
            import cv2
            img = cv2.imread(self.images[index], cv2.IMREAD_COLOR)
            if img is None:
                raise self.error("cannot decode image %s" % self.images[index], FormatError)
            if self.param.window_data_param.cache_images:
                self._cache[index] = img
        return img

    def _window(self, window, mirror, out):
        """Warp one window into out (C, crop, crop), already zero."""
        import cv2
        p = self.param.window_data_param
        index, _, _, x1, y1, x2, y2, line = window
        img = self._image(index)
        rows, cols = img.shape[:2]
        crop = self.crop
        size_w = size_h = crop
        pad_w = pad_h = 0
        f32 = np.float32
        if p.context_pad > 0 or p.crop_mode == "square":
            scale = f32(crop) / f32(crop - 2 * p.context_pad)
            half_h, half_w = f32(y2 - y1 + 1) / f32(2), f32(x2 - x1 + 1) / f32(2)
            cx, cy = f32(x1) + half_w, f32(y1) + half_h
            if p.crop_mode == "square":
                half_h = half_w = max(half_h, half_w)
            x1, x2 = _round(cx - half_w * scale), _round(cx + half_w * scale)
            y1, y2 = _round(cy - half_h * scale), _round(cy + half_h * scale)
            full_h, full_w = y2 - y1 + 1, x2 - x1 + 1
            px1, py1 = max(0, -x1), max(0, -y1)
            px2, py2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
            x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
            sx, sy = f32(crop) / f32(full_w), f32(crop) / f32(full_h)
            size_w, size_h = _round(f32(x2 - x1 + 1) * sx), _round(f32(y2 - y1 + 1) * sy)
            pad_h = _round(f32(py1) * sy)
            pad_w = _round(f32(px2) * sx) if mirror else _round(f32(px1) * sx)
            size_h = min(size_h, crop - pad_h)
            size_w = min(size_w, crop - pad_w)
        if x1 < 0 or y1 < 0 or x2 >= cols or y2 >= rows or x2 < x1 or y2 < y1:
            raise self.error("%s:%d: window (%d, %d, %d, %d) is not inside image %s (%dx%d)"
                             % (p.source, line, window[3], window[4], window[5], window[6], self.images[index],
                                cols, rows), FormatError)
        if size_w <= 0 or size_h <= 0:
            return
        patch = cv2.resize(img[y1:y2 + 1, x1:x2 + 1], (size_w, size_h), interpolation=cv2.INTER_LINEAR)
        if mirror:
            patch = patch[:, ::-1]
        pixels = patch.transpose(2, 0, 1).astype(np.float32)
        if self.mean_image is not None:
            off = (self.mean_image.shape[2] - crop) // 2
            pixels -= self.mean_image[:, off + pad_h:off + pad_h + size_h, off + pad_w:off + pad_w + size_w]
        elif self.mean_values is not None:
            pixels -= self.mean_values[:, None, None]
        out[:, pad_h:pad_h + size_h, pad_w:pad_w + size_w] = pixels * np.float32(p.scale)

    def load_batch(self):
        mirror = self.param.transform_param.mirror
        data = np.zeros((self.batch_size, 3, self.crop, self.crop), np.float32)
        labels = np.empty(self.batch_size, np.float32)
        item = 0
        for pool, count in ((self.bg, self.batch_size - self.num_fg), (self.fg, self.num_fg)):
            for _ in range(count):
                window = pool[int(self.rng.integers(0, len(pool)))]
                flip = bool(mirror and self.rng.integers(0, 2))
                self._window(window, flip, data[item])
                labels[item] = window[1]
                item += 1
                self.records_read += 1
        return data, labels
