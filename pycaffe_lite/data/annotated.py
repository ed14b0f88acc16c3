"""The SSD fork's annotated data: label maps, and AnnotatedDatum records made
from an image and its boxes (VOC XML, COCO-style JSON or 'label xmin ymin
xmax ymax' text), as the fork's convert_annoset makes them: the same fields
set, the same float arithmetic, so the records are byte for byte the fork's."""
import json
import os
import xml.etree.ElementTree as ET

import numpy as np

from .. import glog, protoio
from ..errors import FormatError
from ..proto import caffe_pb2 as pb
from .datum import encode_image, read_image

F32 = np.float32


def label_map_from_names(path, include_background=False, delimiter=" "):
    """create_label_map's reading: lines 'name [label [display_name]]', every
    line with as many fields as the first; with include_background item 0 is
    none_of_the_above (display name background) and names are numbered on."""
    out = pb.LabelMap()
    label = 0
    if include_background:
        out.item.add(name="none_of_the_above", label=0, display_name="background")
        label = 1
    width = None
    try:
        lines = open(path).read().split("\n")
    except OSError as e:
        raise FormatError("%s: cannot read the label names: %s" % (path, e.strerror)) from None
    if lines and lines[-1] == "":
        lines = lines[:-1]
    for number, line in enumerate(lines, 1):
        fields = _split(line, delimiter)
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            raise FormatError("%s:%d: %d fields where the first line has %d; every line is 'name [label "
                              "[display_name]]'" % (path, number, len(fields), width))
        if not 1 <= width <= 3:
            raise FormatError("%s:%d: %d fields; a line is 'name [label [display_name]]'" % (path, number, width))
        item = out.item.add(name=fields[0])
        if width == 1:
            item.label, item.display_name = label, fields[0]
            label += 1
        else:
            label = _atoi(fields[1])
            item.label = label
            item.display_name = fields[2] if width == 3 else fields[0]
    return out


def _split(line, delimiter):
    """boost::split on any of the delimiter's characters (empty fields kept)."""
    fields, cur = [], ""
    for ch in line:
        if ch in delimiter:
            fields.append(cur)
            cur = ""
        else:
            cur += ch
    fields.append(cur)
    return fields


def _atoi(text):
    """C's atoi: leading spaces, a sign, digits; 0 when none."""
    text = text.lstrip()
    sign, i = 1, 0
    if text[:1] in "+-" and text:
        sign, i = (-1 if text[0] == "-" else 1), 1
    digits = ""
    while i < len(text) and text[i].isdigit():
        digits += text[i]
        i += 1
    return sign * int(digits) if digits else 0


def read_label_map(path):
    return protoio.read_text(path, pb.LabelMap())


def name_to_label(label_map, strict=False, where="label map"):
    """{name: label}; strict (--check_label): a name given twice is an error."""
    out = {}
    for item in label_map.item:
        if strict and item.name in out:
            raise FormatError("%s: the name '%s' is given more than once" % (where, item.name))
        out[item.name] = item.label
    return out


def _scaled(img_path, height, width, min_dim, max_dim, is_color):
    """ReadImageToCVMat: the image, resized to min_dim/max_dim (aspect kept)
    or to height x width."""
    import cv2
    img = read_image(img_path, 0, 0, is_color)
    if img is None:
        return None
    if min_dim > 0 or max_dim > 0:
        rows, cols = img.shape[:2]
        factor = F32(1)
        if min_dim > 0 and min(rows, cols) < min_dim:
            factor = F32(min_dim) / F32(min(rows, cols))
        if max_dim > 0 and int(factor * F32(max(rows, cols))) > max_dim:
            factor = F32(max_dim) / F32(max(rows, cols))
        if factor != 1:
            img = cv2.resize(img, (0, 0), fx=float(factor), fy=float(factor), interpolation=cv2.INTER_LINEAR)
            if img.ndim == 2:
                img = img[:, :, None]
    elif height > 0 and width > 0:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
        if img.ndim == 2:
            img = img[:, :, None]
    return img


def image_to_datum(path, datum, height=0, width=0, min_dim=0, max_dim=0, is_color=True, encoding=""):
    """The fork's ReadImageToDatum (label -1) into `datum`; False when unreadable."""
    img = _scaled(path, height, width, min_dim, max_dim, is_color)
    if img is None:
        return False
    datum.Clear()
    if encoding:
        ext = os.path.splitext(path)[1][1:].lower()
        want = encoding.lower()
        same = ext == want or (want == "jpg" and ext == "jpeg")
        if (img.shape[2] == 3) == is_color and not (height or width or min_dim or max_dim) and same:
            datum.channels, datum.height, datum.width = img.shape[2], img.shape[0], img.shape[1]
            with open(path, "rb") as f:
                datum.data = f.read()
            datum.label, datum.encoded = -1, True
            return True
        datum.data = encode_image(img, encoding.lstrip("."))
        datum.channels, datum.height, datum.width = img.shape[2], img.shape[0], img.shape[1]
        datum.encoded = True
        datum.label = -1
        return True
    datum.channels, datum.height, datum.width = img.shape[2], img.shape[0], img.shape[1]
    datum.encoded = False
    datum.data = np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()
    datum.label = -1
    return True


def _annotation_for(anno_datum, label):
    """A new Annotation in its class's group (made at the class's first
    box), its instance id one past the group's last."""
    for group in anno_datum.annotation_group:
        if group.group_label == label:
            instance = group.annotation[-1].instance_id + 1 if len(group.annotation) else 0
            anno = group.annotation.add()
            anno.instance_id = instance
            return anno
    group = anno_datum.annotation_group.add(group_label=label)
    anno = group.annotation.add()
    anno.instance_id = 0
    return anno


def _set_box(anno, xmin, ymin, xmax, ymax, width, height, difficult):
    box = anno.bbox
    box.xmin = float(F32(xmin) / F32(width))
    box.ymin = float(F32(ymin) / F32(height))
    box.xmax = float(F32(xmax) / F32(width))
    box.ymax = float(F32(ymax) / F32(height))
    box.difficult = difficult


def _warn_box(path, xmin, ymin, xmax, ymax, width, height):
    if min(xmin, ymin, xmax, ymax) < 0 or xmin > width or xmax > width or ymin > height or ymax > height:
        glog.warning("%s bounding box exceeds image boundary.", path)
    if xmin > xmax or ymin > ymax:
        glog.warning("%s bounding box irregular.", path)


def read_xml(path, anno_datum, img_height, img_width, names):
    """VOC XML boxes into anno_datum (the fork's ReadXMLToAnnotatedDatum)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise FormatError("%s: not a readable VOC annotation: %s" % (path, e)) from None
    try:
        height = int(root.find("size/height").text)
        width = int(root.find("size/width").text)
    except (AttributeError, TypeError, ValueError):
        glog.warning("When parsing %s: no size; the image's own (%dx%d) is used", path, img_width, img_height)
        height, width = img_height, img_width
    if height != img_height:
        glog.warning("%s inconsistent image height.", path)
    if width != img_width:
        glog.warning("%s inconsistent image width.", path)
    if not width or not height:
        raise FormatError("%s: no valid image width/height" % path)
    for number, obj in enumerate(root.findall("object"), 1):
        anno, difficult = None, False
        for child in obj:
            if child.tag == "name":
                name = (child.text or "").strip()
                if name not in names:
                    raise FormatError("%s: object %d is a '%s', which the label map does not name (it names: %s)"
                                      % (path, number, name, ", ".join(sorted(names))))
                anno = _annotation_for(anno_datum, names[name])
            elif child.tag == "difficult":
                difficult = (child.text or "").strip() == "1"
            elif child.tag == "bndbox":
                if anno is None:
                    raise FormatError("%s: object %d has a bndbox before its name" % (path, number))
                try:
                    coords = [int(child.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax")]
                except ValueError as e:
                    raise FormatError("%s: object %d has a bndbox that is not whole pixels: %s"
                                      % (path, number, e)) from None
                _warn_box(path, *coords, width, height)
                _set_box(anno, *coords, width, height, difficult)
    return True


def read_txt(path, anno_datum, height, width):
    """'label xmin ymin xmax ymax' lines (pixels) into anno_datum; never difficult."""
    try:
        words = open(path).read().split()
    except OSError:
        glog.info("Cannot open %s", path)
        return False
    for k in range(0, len(words) - 4, 5):
        try:
            label = int(words[k])
            coords = [float(F32(w)) for w in words[k + 1:k + 5]]
        except ValueError:
            break                      # the fork's stream stops at the first unreadable value
        anno = _annotation_for(anno_datum, label)
        _warn_box(path, *coords, width, height)
        _set_box(anno, *coords, width, height, False)
    return True


def read_json(path, anno_datum, img_height, img_width, names):
    """COCO-style JSON ({"image": {"height", "width"}, "annotation": [{"category_id",
    "bbox": [x, y, w, h], "iscrowd"}]}) into anno_datum."""
    try:
        doc = json.load(open(path))
    except (OSError, ValueError) as e:
        raise FormatError("%s: not a readable JSON annotation: %s" % (path, e)) from None
    try:
        height, width = int(doc["image"]["height"]), int(doc["image"]["width"])
    except (KeyError, TypeError, ValueError):
        height, width = img_height, img_width
    if not width or not height:
        raise FormatError("%s: no valid image width/height" % path)
    for number, obj in enumerate(doc.get("annotation", []), 1):
        name = str(obj.get("category_id"))
        if name not in names:
            raise FormatError("%s: annotation %d is a '%s', which the label map does not name" % (path, number, name))
        anno = _annotation_for(anno_datum, names[name])
        x, y, w, h = (float(v) for v in obj["bbox"])
        _warn_box(path, x, y, x + w, y + h, width, height)
        _set_box(anno, x, y, x + w, y + h, width, height, bool(obj.get("iscrowd", False)))
    return True


def annotated_datum(image, labels, names, label_type="xml", height=0, width=0, min_dim=0, max_dim=0,
                    is_color=True, encoding="", out=None):
    """The fork's ReadRichImageToAnnotatedDatum: None when the image cannot
    be read; no boxes when the label file does not exist."""
    out = out if out is not None else pb.AnnotatedDatum()
    if not image_to_datum(image, out.datum, height, width, min_dim, max_dim, is_color, encoding):
        return None
    del out.annotation_group[:]
    out.type = pb.AnnotatedDatum.BBOX
    if not os.path.exists(labels):
        return out
    ori = read_image(image, 0, 0, True)
    oh, ow = ori.shape[:2]
    if label_type == "xml":
        read_xml(labels, out, oh, ow, names)
    elif label_type == "json":
        read_json(labels, out, oh, ow, names)
    elif label_type == "txt":
        read_txt(labels, out, oh, ow)
    else:
        raise FormatError("unknown label_type '%s' (xml, json or txt)" % label_type)
    return out
