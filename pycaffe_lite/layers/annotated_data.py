"""The SSD fork's AnnotatedData layer: a Data layer over AnnotatedDatum
records (convert_annoset) whose second top holds the boxes of the batch as
rows [item, group label, instance, xmin, ymin, xmax, ymax, difficult] in a
(1, 1, boxes, 8) blob (one row of -1 when the batch has none), or the
records' labels when they carry no annotation type.

Per record, in the fork's order: photometric distortion and expansion
(encoded records), one window of the batch samplers, then the resize
policy, crop, mirror, mean and scale. Encoded records changed by a step are
stored again as JPEG, as the fork does, so training sees its artefacts."""
import numpy as np

from ..data import augment
from ..data.datum import decode_datum, encode_image
from ..errors import FormatError, ShapeError
from ..layer import register
from ..proto import caffe_pb2 as pb
from .data import DataLayer, _PrefetchingLayer

f32 = np.float32
BBOX = pb.AnnotatedDatum.BBOX


@register("AnnotatedData")
class AnnotatedDataLayer(DataLayer):
    def layer_setup(self, bottom, top):
        t = self.param.transform_param
        if t.HasField("noise_param"):
            raise self.error("transform_param.noise_param is not supported; leave it out (the fork's default "
                             "adds no noise)")
        if t.HasField("resize_param") and (t.resize_param.height <= 0 or t.resize_param.width <= 0):
            raise self.error("resize_param needs height and width > 0")
        if t.HasField("expand_param") and t.expand_param.max_expand_ratio <= 1:
            raise self.error("expand_param.max_expand_ratio must be greater than 1")
        if (t.HasField("resize_param") and t.resize_param.resize_mode == pb.ResizeParameter.FIT_SMALL_SIZE
                and self.param.data_param.batch_size != 1):
            raise self.error("resize_mode FIT_SMALL_SIZE makes images of different sizes; it needs batch_size 1")
        if t.force_color and t.force_gray:
            raise self.error("transform_param: force_color and force_gray exclude each other")
        _PrefetchingLayer.layer_setup(self, bottom, top)
        ap = self.param.annotated_data_param
        self.samplers = list(ap.batch_sampler)
        first = self._parse(*self._first)
        self.has_anno_type = first.HasField("type") or ap.HasField("anno_type")
        self.anno_type = ap.anno_type if ap.HasField("anno_type") else first.type
        if self.has_anno_type and self.anno_type != BBOX:
            raise self.error("annotation type %d is unknown; only BBOX (0) is" % self.anno_type)
        top[0].reshape((self.batch_size,) + self._shape(*self._image(first.datum, self._first[0])))
        if len(top) > 1:
            boxes = sum(len(g.annotation) for g in first.annotation_group)
            top[1].reshape((1, 1, max(boxes, 1), 8) if self.has_anno_type else (self.batch_size, 1, 1, 1))

    # -- records -----------------------------------------------------------
    def _decode(self, key, value):             # DataLayer.open_source's look at the first record
        self._first = (key, value)
        c, h, w = self._shape(*self._image(self._parse(key, value).datum, key), crop=False)
        return np.zeros((c, h, w), np.uint8), 0

    def _parse(self, key, value):
        a = pb.AnnotatedDatum()
        try:
            a.ParseFromString(value)
        except Exception:
            a = None
        if a is None or not a.HasField("datum"):
            raise self.error("record %r in %s is not an AnnotatedDatum; make the database with convert_annoset"
                             % (key, self.param.data_param.source), FormatError)
        return a

    def _image(self, datum, key):
        """(H x W x C image, encoded?) of a record; float records stay C x H x W floats."""
        t = self.param.transform_param
        try:
            chw = decode_datum(datum, t.force_color, t.force_gray, key)
        except FormatError as e:
            raise self.error("%s: %s" % (self.param.data_param.source, e), FormatError) from None
        if chw.dtype != np.uint8:
            return chw, None
        return np.ascontiguousarray(chw.transpose(1, 2, 0)), bool(datum.encoded)

    def _shape(self, img, encoded, crop=True):
        """The fork's InferBlobShape: the (C, H, W) an image becomes."""
        t = self.param.transform_param
        c, h, w = img.shape if encoded is None else (img.shape[2],) + img.shape[:2]
        if t.HasField("resize_param"):
            w, h = augment.new_size(t.resize_param, w, h)
        ch, cw = self._crop_size()
        if ch > h or cw > w:
            raise self.error("the crop %dx%d is larger than the %dx%d images" % (ch, cw, h, w), ShapeError)
        return (c, ch or h, cw or w) if crop else (c, h, w)

    def _crop_size(self):
        t = self.param.transform_param
        return (t.crop_size, t.crop_size) if t.crop_size else (t.crop_h, t.crop_w)

    # -- one record through the fork's steps ----------------------------------
    def _mean_fill(self, c):
        tr = self.transformer
        if tr.mean_values is not None:
            return np.clip(np.rint(np.broadcast_to(tr.mean_values, (c,))), 0, 255).astype(np.uint8)
        return np.zeros(c, np.uint8)

    def _reencode(self, img, encoded):
        if not encoded:
            return img
        import cv2
        out = cv2.imdecode(np.frombuffer(encode_image(img, "jpg"), np.uint8), cv2.IMREAD_UNCHANGED)
        return out.reshape(out.shape[0], out.shape[1], img.shape[2])

    def _augment(self, img, encoded, groups):
        t = self.param.transform_param
        rng = self.rng
        if t.HasField("distort_param") and encoded:
            img = self._reencode(augment.distort(img, t.distort_param, rng), True)
        if t.HasField("expand_param"):
            if self.transformer.mean_image is not None:
                raise self.error("expand_param with a mean_file: the canvas would need a mean of the expanded "
                                 "size; use mean_value")
            # The fork fills a raw record's canvas with spaces (byte 32), an encoded one's with the mean.
            fill = self._mean_fill(img.shape[2]) if encoded else np.uint8(32)
            out, window = augment.expand(img, t.expand_param, fill, rng)
            if window is not None:
                img = self._reencode(out, encoded)
                groups = augment.transform_groups(groups, window, t)
        if self.samplers:
            windows = augment.sample_windows(augment.object_boxes(groups), self.samplers, rng)
            if windows:
                window = augment.clip_box(windows[int(rng.integers(len(windows)))])
                img = self._reencode(augment.crop(img, window), encoded)
                groups = augment.transform_groups(groups, window, t)
        return img, groups

    def _finish(self, img, encoded, groups, out):
        """Resize, crop, mirror, mean and scale into out (C x H x W float32);
        returns the boxes in the output's frame."""
        t = self.param.transform_param
        tr = self.transformer
        if encoded is None:                    # float_data records: C x H x W as stored
            img = img.transpose(1, 2, 0)
        elif encoded and t.HasField("resize_param"):
            img = augment.apply_resize(img, t.resize_param, self.rng)
        h, w, c = img.shape
        _, oh, ow = out.shape
        if (h, w) != (oh, ow) and not (t.crop_size or (t.crop_h and t.crop_w)):
            raise self.error("a %dx%d record is not resized to the batch's %dx%d: only encoded records are (the "
                             "fork's rule); convert with --encoded, or at the net's size" % (h, w, oh, ow),
                             ShapeError)
        ch, cw = self._crop_size() if (t.crop_size or (t.crop_h and t.crop_w)) else (0, 0)
        h_off = w_off = 0
        if ch and cw:
            if ch > h or cw > w:
                raise self.error("the crop %dx%d is larger than a %dx%d image" % (ch, cw, h, w), ShapeError)
            if self.phase == pb.TRAIN:
                h_off, w_off = int(self.rng.integers(h - ch + 1)), int(self.rng.integers(w - cw + 1))
            else:
                h_off, w_off = (h - ch) // 2, (w - cw) // 2
        mirror = bool(t.mirror and self.rng.integers(2))
        x = img[h_off:h_off + oh, w_off:w_off + ow].transpose(2, 0, 1).astype(np.float32)
        if tr.mean_image is not None:
            if tr.mean_image.shape != (c, h, w):
                raise self.error("mean_file %s is %s but the images are %s" % (t.mean_file, tr.mean_image.shape,
                                                                              (c, h, w)), ShapeError)
            x -= tr.mean_image[:, h_off:h_off + oh, w_off:w_off + ow]
        elif tr.mean_values is not None:
            if len(tr.mean_values) not in (1, c):
                raise self.error("give one mean_value, or one per channel (%d), not %d" % (c, len(tr.mean_values)))
            x -= tr.mean_values.reshape(-1, 1, 1) if len(tr.mean_values) > 1 else tr.mean_values[0]
        if tr.scale != 1:
            x *= tr.scale
        out[...] = x[:, :, ::-1] if mirror else x
        window = np.array([f32(w_off) / f32(w), f32(h_off) / f32(h), f32(w_off + ow) / f32(w),
                           f32(h_off + oh) / f32(h)], f32)
        return window, mirror

    def load_batch(self):
        t = self.param.transform_param
        records = self.take_records()
        rows, labels = [], np.empty((self.batch_size, 1, 1, 1), np.float32)
        out = None
        for item, (key, value) in enumerate(records):
            a = self._parse(key, value)
            img, encoded = self._image(a.datum, key)
            groups = augment.groups_of(a) if self.has_anno_type else []
            if encoded is not None and (t.HasField("expand_param") or self.samplers
                                        or t.HasField("distort_param")):
                img, groups = self._augment(img, encoded, groups)
            elif encoded is None and (t.HasField("expand_param") or self.samplers):
                raise self.error("record %r holds float_data; expansion and batch samplers need pixels" % (key,))
            if out is None:
                out = np.empty((self.batch_size,) + self._shape(img, encoded), np.float32)
            elif self._shape(img, encoded) != out.shape[1:]:
                raise self.error("record %r makes a %s image, the batch's first %s; records must have one size "
                                 "(resize when converting, or give resize_param)"
                                 % (key, self._shape(img, encoded), out.shape[1:]), ShapeError)
            window, mirror = self._finish(img, encoded, groups, out[item])
            if self.has_anno_type:
                if not self.param.annotated_data_param.HasField("anno_type") and a.type != self.anno_type:
                    raise self.error("record %r has annotation type %d, the first record %d"
                                     % (key, a.type, self.anno_type), FormatError)
                # The resize policy moves the boxes by the image's size before resizing.
                height, width = img.shape[:2] if encoded is not None else img.shape[1:]
                for label, annos in augment.transform_groups(groups, window, t, width, height, True, mirror):
                    for instance, box, difficult in annos:
                        rows.append((item, label, instance, box[0], box[1], box[2], box[3], float(difficult)))
            else:
                if not a.datum.HasField("label"):
                    raise self.error("record %r has no label" % (key,), FormatError)
                labels[item] = a.datum.label
        if not self.has_anno_type:
            return out, labels
        label = np.full((1, 1, 1, 8), -1, np.float32) if not rows else \
            np.asarray(rows, np.float32).reshape(1, 1, len(rows), 8)
        return out, label
