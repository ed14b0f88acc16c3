"""The detection half of the brew demo (`brew_demo --detection`): SSD's
recipe end to end on a set made here, in a few minutes on two cores.

Shapes (circle, square, triangle) are drawn on crops of the photographs
scikit-image ships, with VOC XML beside each image; convert_annoset writes
the LMDBs, caffe.model_libs writes a small SSD as ssd_pascal.py writes nets,
caffe train trains it (mAP test lines), resumes from the middle snapshot,
and the detections on validation images become a picture."""
import os
from xml.sax.saxutils import escape

import numpy as np

CLASSES = ["circle", "square", "triangle"]
SIZE = 64                  # the images and the net's input
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
               "colorwheel", "camera", "brick", "grass", "gravel", "moon", "coins", "clock", "horse", "text")


def backgrounds():
    import skimage.data
    out = []
    for name in BACKGROUNDS:
        img = np.asarray(getattr(skimage.data, name)()).astype(np.float32)
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        img = img[..., :3]
        img = (255 * (img - img.min()) / max(float(img.max() - img.min()), 1e-6)).astype(np.uint8)
        out.append(np.ascontiguousarray(img[..., ::-1]))           # BGR, as OpenCV writes
    return out


def _draw(img, kind, box, colour):
    import cv2
    x0, y0, x1, y1 = box
    if kind == "circle":
        cv2.ellipse(img, (((x0 + x1) / 2, (y0 + y1) / 2), (x1 - x0, y1 - y0), 0), colour, -1, cv2.LINE_AA)
    elif kind == "square":
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), colour, -1, cv2.LINE_AA)
    else:
        pts = np.array([[(x0 + x1) // 2, y0], [x1 - 1, y1 - 1], [x0, y1 - 1]], np.int32)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)


def scene(rng, scenery):
    """One SIZE x SIZE image with 1-3 shapes that overlap little; returns (image, [(class, box)])."""
    import cv2
    bg = scenery[rng.integers(len(scenery))]
    side = int(rng.integers(SIZE, min(bg.shape[:2]) + 1))
    y, x = rng.integers(0, bg.shape[0] - side + 1), rng.integers(0, bg.shape[1] - side + 1)
    img = cv2.resize(bg[y:y + side, x:x + side], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    img = (img * 0.6).astype(np.uint8)                                # the shapes stand out a little
    objects = []
    for _ in range(int(rng.integers(1, 4)) * 4):
        if len(objects) == 3:
            break
        s = int(rng.integers(12, 33))
        x0, y0 = int(rng.integers(0, SIZE - s + 1)), int(rng.integers(0, SIZE - s + 1))
        box = (x0, y0, x0 + s, y0 + s)
        if any(_iou(box, b) > 0.1 for _, b in objects):
            continue
        objects.append((int(rng.integers(len(CLASSES))), box))
    for cls, box in objects:
        colour = tuple(int(c) for c in rng.integers(120, 256, 3))
        _draw(img, CLASSES[cls], box, colour)
    return img, objects


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def voc_xml(name, objects):
    parts = ["<annotation><filename>%s</filename><size><width>%d</width><height>%d</height><depth>3</depth></size>"
             % (escape(name), SIZE, SIZE)]
    for cls, (x0, y0, x1, y1) in objects:
        # VOC's boxes are 1-based and inclusive.
        parts.append("<object><name>%s</name><difficult>0</difficult><bndbox><xmin>%d</xmin><ymin>%d</ymin>"
                     "<xmax>%d</xmax><ymax>%d</ymax></bndbox></object>" % (CLASSES[cls], x0 + 1, y0 + 1, x1, y1))
    return "".join(parts) + "</annotation>\n"


def write_set(root, train, val, seed=0):
    """JPEGs and VOC XML under root/, lists root/{train,val}.txt and root/labels.txt."""
    import cv2
    rng = np.random.default_rng(seed)
    scenery = backgrounds()
    for sub in ("JPEGImages", "Annotations"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    truth = {}
    for split, count in (("train", train), ("val", val)):
        lines = []
        for i in range(count):
            name = "%s_%04d" % (split, i)
            img, objects = scene(rng, scenery)
            cv2.imwrite(os.path.join(root, "JPEGImages", name + ".jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            with open(os.path.join(root, "Annotations", name + ".xml"), "w") as f:
                f.write(voc_xml(name + ".jpg", objects))
            lines.append("JPEGImages/%s.jpg Annotations/%s.xml" % (name, name))
            truth[name] = objects
        with open(os.path.join(root, split + ".txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    with open(os.path.join(root, "labels.txt"), "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    return truth


# -- the nets (caffe.model_libs, as ssd_pascal.py writes them) -----------------------
# Source maps at strides 4, 8 and 16 (16x16, 8x8, 4x4) for objects of 12 to 32 pixels.
SOURCES = ["conv3b", "conv4b", "conv5"]
MIN_SIZES, MAX_SIZES = [10, 16, 24], [16, 24, 36]
ASPECT_RATIOS = [[], [], []]
STEPS = [4, 8, 16]


def nets(train_db, val_db, label_map, batch, test_batch, augment=True):
    """(train, test, deploy) NetParameters."""
    from .. import layers as L, params as P
    from .. import NetSpec
    from ..model_libs import CreateAnnotatedDataLayer, CreateMultiBoxHead
    from ..proto import caffe_pb2

    def head(net):
        return CreateMultiBoxHead(net, data_layer="data", from_layers=SOURCES, use_batchnorm=False,
                                  min_sizes=MIN_SIZES, max_sizes=MAX_SIZES, aspect_ratios=ASPECT_RATIOS,
                                  steps=STEPS, num_classes=len(CLASSES) + 1, share_location=True, flip=True,
                                  clip=False, prior_variance=[0.1, 0.1, 0.2, 0.2], kernel_size=3, pad=1)

    def body(net):
        from ..model_libs import ConvBNLayer
        prev = "data"
        for name, out, stride in (("conv1", 16, 1), ("conv2", 32, 2), ("conv2b", 32, 1), ("conv3", 64, 2),
                                  ("conv3b", 64, 1), ("conv4", 96, 2), ("conv4b", 96, 1), ("conv5", 96, 2)):
            ConvBNLayer(net, prev, name, use_bn=False, use_relu=True, num_output=out, kernel_size=3, pad=1,
                        stride=stride)
            prev = name

    resize = {"prob": 1, "resize_mode": P.Resize.WARP, "height": SIZE, "width": SIZE,
              "interp_mode": [P.Resize.LINEAR]}
    train_transform = {"mirror": True, "mean_value": [104, 117, 123], "scale": 0.017, "resize_param": resize,
                       "emit_constraint": {"emit_type": caffe_pb2.EmitConstraint.CENTER}}
    if augment:
        train_transform["distort_param"] = {"brightness_prob": 0.5, "brightness_delta": 24, "contrast_prob": 0.5,
                                            "contrast_lower": 0.7, "contrast_upper": 1.3}
    samplers = [{"sampler": {}, "max_trials": 1, "max_sample": 1}] + [
        {"sampler": {"min_scale": 0.5, "max_scale": 1.0, "min_aspect_ratio": 0.75, "max_aspect_ratio": 1.33},
         "sample_constraint": {"min_jaccard_overlap": v}, "max_trials": 20, "max_sample": 1} for v in (0.3, 0.7)]
    test_transform = {"mean_value": [104, 117, 123], "scale": 0.017, "resize_param": resize}
    loss_param = {"loc_loss_type": P.MultiBoxLoss.SMOOTH_L1, "conf_loss_type": P.MultiBoxLoss.SOFTMAX,
                  "loc_weight": 1.0, "num_classes": len(CLASSES) + 1, "share_location": True,
                  "match_type": P.MultiBoxLoss.PER_PREDICTION, "overlap_threshold": 0.5,
                  "use_prior_for_matching": True, "background_label_id": 0, "use_difficult_gt": True,
                  "mining_type": P.MultiBoxLoss.MAX_NEGATIVE, "neg_pos_ratio": 3.0, "neg_overlap": 0.5,
                  "code_type": P.PriorBox.CENTER_SIZE, "ignore_cross_boundary_bbox": False}

    train = NetSpec()
    train.data, train.label = CreateAnnotatedDataLayer(train_db, batch_size=batch, train=True, label_map_file=label_map,
                                                       transform_param=train_transform,
                                                       batch_sampler=samplers if augment else [{}])
    body(train)
    mbox = head(train) + [train.label]
    train.mbox_loss = L.MultiBoxLoss(*mbox, multibox_loss_param=loss_param,
                                     loss_param={"normalization": P.Loss.VALID},
                                     include={"phase": caffe_pb2.Phase.Value("TRAIN")},
                                     propagate_down=[True, True, False, False])

    def outputs(net):
        mbox = head(net)
        net.mbox_conf_reshape = L.Reshape(mbox[1], shape={"dim": [0, -1, len(CLASSES) + 1]})
        net.mbox_conf_softmax = L.Softmax(net.mbox_conf_reshape, axis=2)
        net.mbox_conf_flatten = L.Flatten(net.mbox_conf_softmax, axis=1)
        net.detection_out = L.DetectionOutput(mbox[0], net.mbox_conf_flatten, mbox[2], detection_output_param={
            "num_classes": len(CLASSES) + 1, "share_location": True, "background_label_id": 0,
            "nms_param": {"nms_threshold": 0.45, "top_k": 100}, "code_type": P.PriorBox.CENTER_SIZE,
            "keep_top_k": 50, "confidence_threshold": 0.01})

    test = NetSpec()
    test.data, test.label = CreateAnnotatedDataLayer(val_db, batch_size=test_batch, train=False,
                                                     label_map_file=label_map, transform_param=test_transform)
    body(test)
    outputs(test)
    test.detection_eval = L.DetectionEvaluate(test.detection_out, test.label, detection_evaluate_param={
        "num_classes": len(CLASSES) + 1, "background_label_id": 0, "overlap_threshold": 0.5,
        "evaluate_difficult_gt": False})

    deploy = NetSpec()
    deploy.data = L.Input(shape={"dim": [1, 3, SIZE, SIZE]})
    body(deploy)
    outputs(deploy)
    return train.to_proto(), test.to_proto(), deploy.to_proto()


SOLVER = '''train_net: "models/shapes/train.prototxt"
test_net: "models/shapes/test.prototxt"
test_iter: %(test_iter)d
test_interval: %(test_interval)d
test_initialization: false
base_lr: 0.004
lr_policy: "multistep"
stepvalue: %(step)d
gamma: 0.1
momentum: 0.9
weight_decay: 0.0005
display: 50
max_iter: %(max_iter)d
snapshot: %(snapshot)d
snapshot_prefix: "models/shapes/ssd_shapes"
eval_type: "detection"
ap_version: "11point"
solver_mode: CPU
random_seed: 1
'''


def make_demo_class(Demo):
    class DetectionDemo(Demo):
        TRAIN, VAL, TEST_BATCH = 800, 160, 40

        def run(self):
            os.chdir(self.workdir)
            os.makedirs("logs", exist_ok=True)
            with self.step("1. images with VOC XML boxes, the label map, and annotated LMDBs"):
                self.truth = write_set("data/shapes", self.TRAIN, self.VAL)
                self.say("  wrote %d training and %d validation images (%s drawn on scikit-image's photographs) "
                         "with VOC XML in data/shapes/" % (self.TRAIN, self.VAL, ", ".join(CLASSES)))
                self.tool("create_label_map", ["--include_background=true", "data/shapes/labels.txt",
                                               "data/shapes/labelmap.prototxt"], "create_label_map.log")
                self.tool("get_image_size", ["data/shapes/", "data/shapes/val.txt", "data/shapes/val_name_size.txt"],
                          "get_image_size.log")
                os.makedirs("examples/shapes", exist_ok=True)
                common = ["--anno_type=detection", "--label_type=xml", "--label_map_file=data/shapes/labelmap.prototxt",
                          "--encoded", "--encode_type=jpg"]
                self.tool("convert_annoset", common + ["--shuffle", "data/shapes/", "data/shapes/train.txt",
                                                       "examples/shapes/train_lmdb"], "convert_train.log")
                self.tool("convert_annoset", common + ["data/shapes/", "data/shapes/val.txt",
                                                       "examples/shapes/val_lmdb"], "convert_val.log")
            with self.step("2. a small SSD written with caffe.model_libs (as ssd_pascal.py writes SSD300)"):
                os.makedirs("models/shapes", exist_ok=True)
                train, test, deploy = nets("examples/shapes/train_lmdb", "examples/shapes/val_lmdb",
                                           "data/shapes/labelmap.prototxt", 16, self.TEST_BATCH)
                for name, proto in (("train", train), ("test", test), ("deploy", deploy)):
                    with open("models/shapes/%s.prototxt" % name, "w") as f:
                        f.write(str(proto))
                half = self.iterations // 2
                fields = dict(test_iter=self.VAL // self.TEST_BATCH, test_interval=half, step=int(self.iterations * 0.8),
                              max_iter=self.iterations, snapshot=half)
                with open("models/shapes/solver.prototxt", "w") as f:
                    f.write(SOLVER % fields)
                with open("models/shapes/solver_first_half.prototxt", "w") as f:
                    f.write(SOLVER % dict(fields, max_iter=half))
                self.say("  wrote models/shapes/{train,test,deploy}.prototxt and solver.prototxt (eval_type: detection, "
                         "11-point mAP)")
            with self.step("3. train (the first half), with mAP test lines"):
                self.train(["--solver=models/shapes/solver_first_half.prototxt"], "train.log", 0, half)
            with self.step("4. resume from the middle snapshot and finish"):
                state = "models/shapes/ssd_shapes_iter_%d.solverstate" % half
                self.train(["--solver=models/shapes/solver.prototxt", "--snapshot=" + state], "resume.log", half,
                           self.iterations)
            with self.step("5. detect on validation images from Python (pictures)"), self.glog_to("detect.log"):
                self.detections_picture()
            return self.map

        def train(self, args, log, start, stop):
            Demo.train(self, args, log, start, stop)
            import re
            found = re.findall(r"Test net output #0: detection_eval = (\S+)", open(os.path.join("logs", log)).read())
            if found:
                self.map = float(found[-1])
                self.say("  iteration %d: validation mAP %.3f (11-point, the solver's test lines)" % (stop, self.map))

        def detections_picture(self):
            import cv2
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            from .. import Net, TEST
            net = Net("models/shapes/deploy.prototxt", "models/shapes/ssd_shapes_iter_%d.caffemodel" % self.iterations,
                      TEST)
            names = sorted(self.truth)[-self.VAL:][:12]
            fig, axes = plt.subplots(3, 4, figsize=(10, 7.5))
            for ax, name in zip(axes.ravel(), names):
                img = cv2.imread("data/shapes/JPEGImages/%s.jpg" % name)
                net.blobs["data"].data[...] = ((img.astype(np.float32) - [104, 117, 123]) * 0.017).transpose(2, 0, 1)
                rows = net.forward()["detection_out"].reshape(-1, 7)
                ax.imshow(img[..., ::-1])
                for r in rows[rows[:, 2] >= 0.5]:
                    x0, y0, x1, y1 = r[3:] * SIZE
                    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
                    ax.text(x0, y0 - 1, "%s %.2f" % (CLASSES[int(r[1]) - 1], r[2]), color="lime", fontsize=7)
                ax.set_title(name, fontsize=8)
                ax.axis("off")
            fig.suptitle("detections with score >= 0.5 on validation images")
            fig.tight_layout()
            fig.savefig("detections.png", dpi=100)
            plt.close(fig)
            self.say("  detections.png: the trained SSD's boxes on 12 validation images")

        def summary(self, m):
            self.say("\n== summary")
            self.say("  validation mAP: %.3f (11-point VOC2007, %d images)" % (m, self.VAL))
            self.say("  LMDBs: %s/examples/shapes/{train,val}_lmdb; label map: data/shapes/labelmap.prototxt"
                     % self.workdir)
            self.say("  snapshots: %s/models/shapes/ssd_shapes_iter_{%d,%d}.{caffemodel,solverstate}"
                     % (self.workdir, self.iterations // 2, self.iterations))
            self.say("  pictures: detections.png; logs: logs/")
            for title, seconds in self.timings:
                self.say("  %6.1f s  %s" % (seconds, title))
            self.say("  %6.1f s  in all" % sum(s for _, s in self.timings))

    return DetectionDemo
