"""A fuzzer of every file pycaffe_lite reads: mutated net and solver
prototxts, Datum records, LMDB files, .solverstate, .binaryproto and
.caffemodel files, each fed to what reads it (a net's forward and backward, a
solver's steps, a data layer, compute_image_mean, a resume). The only
acceptable outcomes are "ran" and our clear error (a CaffeError); anything
else (another exception, a crash, a hang) is a finding.

    python tests/fuzz.py [--cases 300] [--seed 1] [CATEGORY ...]

Each category runs in a worker process of its own, so that a crash or a hang
is caught and named with the case that caused it; a fixed seed makes every
case reproducible (`--one CATEGORY SEED INDEX` replays one)."""
import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

CATEGORIES = ("net", "solver", "datum", "lmdb", "solverstate", "binaryproto", "caffemodel")

NETS = [
    '''name: "lenet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 1 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 stride: 1 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" }
layer { name: "lrn" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 3 alpha: 0.1 beta: 0.75 } }
layer { name: "ip1" type: "InnerProduct" bottom: "norm1" top: "ip1"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
force_backward: true
''',
    '''name: "res"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 2 bias_term: false weight_filler { type: "msra" } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { use_global_stats: false } }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "conv" top: "sum" eltwise_param { operation: SUM coeff: 1 coeff: 0.5 } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "data" top: "cat" concat_param { axis: 1 } }
layer { name: "deconv" type: "Deconvolution" bottom: "cat" top: "up"
  convolution_param { num_output: 2 kernel_size: 4 stride: 2 pad: 1 weight_filler { type: "bilinear" } } }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "data" top: "crop" crop_param { axis: 2 offset: 1 } }
layer { name: "ave" type: "Pooling" bottom: "crop" top: "ave" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
force_backward: true
''',
    '''name: "seq"
layer { name: "x" type: "Input" top: "x" top: "cont" input_param { shape { dim: 3 dim: 2 dim: 4 } shape { dim: 3 dim: 2 } } }
layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
  recurrent_param { num_output: 5 weight_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "slice" type: "Slice" bottom: "h" top: "a" top: "b" slice_param { axis: 2 slice_point: 2 } }
layer { name: "flat" type: "Flatten" bottom: "a" top: "flat" }
layer { name: "red" type: "Reduction" bottom: "b" top: "red" reduction_param { operation: SUMSQ axis: 1 } }
layer { name: "tile" type: "Tile" bottom: "flat" top: "tile" tile_param { tiles: 2 } }
force_backward: true
''',
]

TRAIN_NET = '''name: "small"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 dim: 5 dim: 5 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
'''

SOLVER = '''net: "%(net)s"
test_iter: 1
test_interval: 2
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "step"
gamma: 0.5
stepsize: 2
display: 1
max_iter: 3
snapshot: 2
snapshot_prefix: "%(prefix)s"
solver_mode: CPU
random_seed: 1
type: "%(type)s"
'''

DATA_NET = '''name: "reader"
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { crop_size: 4 %(mean)s }
  data_param { source: "%(db)s" batch_size: 3 backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
'''

NUMBERS = ["0", "-1", "1", "2", "3", "7", "999999999", "2147483647", "-2147483648", "1e30", "nan", "inf", "0.5",
           "-0.25", "65536"]
WORDS = ["TEST", "TRAIN", "MAX", "AVE", "CAFFE", "foo", "{", "}", '"x"', '"data"', '""', "true", "false", ":", "#"]
# fields that parse where they are put: they reach the layers and the solver
BLOCK_FIELDS = {
    "convolution_param": ["pad: 3", "group: 0", "group: 3", "kernel_size: 0", "kernel_size: 9", "stride: 0",
                          "stride: 5", "num_output: 0", "dilation: 0", "dilation: 4", "axis: -5", "axis: 3",
                          "engine: CAFFE", "kernel_h: 2", "pad_w: 1", "bias_term: false", "kernel_size: 2"],
    "pooling_param": ["pad: 2", "stride: 0", "kernel_size: 0", "kernel_size: 13", "global_pooling: true",
                      "pool: STOCHASTIC", "round_mode: FLOOR", "pad: 9", "engine: CAFFE"],
    "lrn_param": ["local_size: 4", "local_size: 0", "alpha: -1", "beta: 0", "k: 0", "norm_region: WITHIN_CHANNEL"],
    "inner_product_param": ["axis: 3", "axis: -1", "transpose: true", "num_output: 0", "axis: 9"],
    "eltwise_param": ["coeff: 2", "operation: PROD", "operation: MAX", "stable_prod_grad: false"],
    "concat_param": ["axis: 3", "axis: -9", "concat_dim: 2"],
    "crop_param": ["offset: 9", "axis: 0", "offset: 1 offset: 2 offset: 3"],
    "batch_norm_param": ["eps: 0", "moving_average_fraction: -1", "use_global_stats: true"],
    "scale_param": ["axis: 0", "num_axes: 3", "num_axes: -2"],
    "recurrent_param": ["num_output: 0", "expose_hidden: true"],
    "slice_param": ["slice_point: 9", "axis: 0", "slice_point: 1 slice_point: 1"],
    "reduction_param": ["axis: 5", "operation: MEAN", "coeff: 0"],
    "tile_param": ["tiles: 0", "axis: 9"],
    "shape": ["dim: 0", "dim: 1000", "dim: 999999999"],
    "transform_param": ["crop_size: 9", "mirror: true", "scale: 0", "mean_value: 1 mean_value: 2"],
}
FIELDS = ["pad: 3", "group: 5", "axis: -5", "kernel_size: 0", "engine: CAFFE", "stride: 0", "num_output: 0",
          'bottom: "nope"', 'top: "data"', "loss_weight: 2", "dilation: 2", "propagate_down: false",
          "include { phase: TRAIN }", "exclude { phase: TEST }", 'param { name: "shared" }', "iter_size: 0",
          "average_loss: 0", 'lr_policy: "multistep"', "stepvalue: 1", "test_iter: 0", "type: \"Adam\"",
          'snapshot_prefix: "/nonexistent/x"', "clip_gradients: 0.001", "solver_mode: GPU", "dim: 0"]


def mutate_text(text, rng):
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        # mostly changes that still parse, so that the mutation reaches the
        # layers and the solver; now and then a syntax error
        op = rng.choice([0, 0, 0, 0, 4, 4, 6, 6, 1, 2, 3, 5])
        if op == 0:                                   # a number changed
            spots = [m for m in re.finditer(r"(?<![\w.])-?\d+(\.\d+)?(e-?\d+)?", text)]
            if spots:
                m = rng.choice(spots)
                text = text[:m.start()] + rng.choice(NUMBERS) + text[m.end():]
                lines = text.splitlines()
                continue
        if op == 1 and lines:                         # a line dropped
            del lines[rng.randrange(len(lines))]
        elif op == 2 and lines:                       # a line given twice
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
        elif op == 3:                                 # a token replaced
            tokens = text.split(" ")
            tokens[rng.randrange(len(tokens))] = rng.choice(WORDS + NUMBERS)
            lines = " ".join(tokens).splitlines()
        elif op == 4 and lines:                       # a field added to a block that has it
            joined = "\n".join(lines)
            spots = [(m.end(), m.group(1)) for m in re.finditer(r"(\w+) \{", joined) if m.group(1) in BLOCK_FIELDS]
            if spots and rng.random() < 0.8:
                at, block = rng.choice(spots)
                field = rng.choice(BLOCK_FIELDS[block])
                name = field.split(":")[0]
                rest = re.sub(r"\b%s: [^\s}]+ ?" % name, "", joined[at:], count=1)    # not given twice
                joined = joined[:at] + " " + field + " " + rest
            else:
                joined += "\n" + rng.choice(FIELDS)
            lines = joined.splitlines()
        elif op == 5:                                 # cut short
            joined = "\n".join(lines)
            lines = joined[:rng.randrange(len(joined) + 1)].splitlines()
        elif op == 6 and lines:                       # a field's value swapped for another field's
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            a, b = lines[i].split(":", 1), lines[j].split(":", 1)
            if len(a) == 2 and len(b) == 2:
                lines[i] = a[0] + ":" + b[1]
        text = "\n".join(lines)
    return text + "\n"


def mutate_bytes(data, rng):
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        if not data:
            data += bytes([rng.randrange(256)])
        if op == 0:                                   # bits flipped
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1:                                 # cut short
            del data[rng.randrange(len(data)):]
        elif op == 2:                                 # bytes inserted
            i = rng.randrange(len(data) + 1)
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 3:                                 # a span zeroed
            i = rng.randrange(len(data))
            n = rng.randint(1, 64)
            data[i:i + n] = bytes(len(data[i:i + n]))
        else:                                         # a span repeated
            i = rng.randrange(len(data))
            data[i:i] = data[i:i + rng.randint(1, 32)]
    return bytes(data)


def mutate_message(msg, rng):
    """Numeric fields of a protobuf message (anywhere in it) set to edge
    values, repeated fields emptied or given one more element."""
    from google.protobuf.descriptor import FieldDescriptor as F
    found = []

    def repeated(fd):
        flag = getattr(fd, "is_repeated", None)
        return flag if flag is not None else fd.label == F.LABEL_REPEATED

    def walk(m):
        for fd in m.DESCRIPTOR.fields:
            if fd.type == F.TYPE_MESSAGE:
                if repeated(fd):
                    for sub in getattr(m, fd.name):
                        walk(sub)
                    found.append((m, fd))
                elif m.HasField(fd.name):
                    walk(getattr(m, fd.name))
            else:
                found.append((m, fd))
    walk(msg)
    for _ in range(rng.randint(1, 3)):
        if not found:
            break
        m, fd = rng.choice(found)
        ints = [0, -1, 1, 3, 2 ** 31 - 1, -2 ** 31, 1000000]
        try:
            if repeated(fd):
                field = getattr(m, fd.name)
                if rng.random() < 0.5 or fd.type == F.TYPE_MESSAGE:
                    del field[:]
                elif fd.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
                    field.append(rng.choice([0.0, -1.0, float("nan"), 1e30]))
                elif fd.type in (F.TYPE_INT32, F.TYPE_INT64, F.TYPE_UINT32, F.TYPE_UINT64):
                    field.append(rng.choice([v for v in ints if v >= 0 or fd.type in (F.TYPE_INT32, F.TYPE_INT64)]))
            elif fd.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
                setattr(m, fd.name, rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30, 0.5]))
            elif fd.type in (F.TYPE_INT32, F.TYPE_INT64, F.TYPE_SINT32):
                setattr(m, fd.name, rng.choice(ints))
            elif fd.type in (F.TYPE_UINT32, F.TYPE_UINT64):
                setattr(m, fd.name, rng.choice([0, 1, 3, 2 ** 31 - 1, 1000000]))
            elif fd.type == F.TYPE_BOOL:
                setattr(m, fd.name, not getattr(m, fd.name))
            elif fd.type == F.TYPE_BYTES:
                setattr(m, fd.name, rng.choice([b"", b"garbage", bytes(getattr(m, fd.name))[:7]]))
            elif fd.type == F.TYPE_STRING:
                setattr(m, fd.name, rng.choice(["", "x", "nope/none"]))
            elif fd.type == F.TYPE_ENUM:
                setattr(m, fd.name, rng.choice([v.number for v in fd.enum_type.values]))
        except (ValueError, TypeError):
            pass
    return msg


# -- the worker -------------------------------------------------------------
class Fixture:
    """Valid inputs of each kind, made once per worker in `work`."""

    def __init__(self, work):
        import numpy as np
        import lmdb
        import pycaffe_lite as caffe
        from pycaffe_lite.data.datum import encode_image, hwc_to_datum
        from pycaffe_lite.proto import caffe_pb2 as pb
        self.work = work
        caffe.init_log(3)
        rng = np.random.RandomState(0)
        self.datums = []
        for i in range(6):
            img = rng.randint(0, 256, (6, 6, 3)).astype(np.uint8)
            d = hwc_to_datum(img, i % 3)
            if i % 2:
                d = pb.Datum(data=encode_image(img, "png"), label=i % 3, encoded=True)
            self.datums.append(d.SerializeToString())
        self.db = os.path.join(work, "base_lmdb")
        env = lmdb.open(self.db, map_size=1 << 22)
        with env.begin(write=True) as txn:
            for i, v in enumerate(self.datums):
                txn.put(b"%08d" % i, v)
        env.close()
        mean = pb.BlobProto(num=1, channels=3, height=6, width=6)
        mean.data.extend(rng.rand(108).astype(np.float32).tolist())
        self.mean = mean.SerializeToString()
        self.net_path = os.path.join(work, "train.prototxt")
        with open(self.net_path, "w") as f:
            f.write(TRAIN_NET)
        solver_path = os.path.join(work, "solver.prototxt")
        with open(solver_path, "w") as f:
            f.write(SOLVER % dict(net=self.net_path, prefix=os.path.join(work, "base"), type="SGD"))
        s = caffe.get_solver(solver_path)
        s.solve()
        with open(os.path.join(work, "base_iter_2.solverstate"), "rb") as f:
            self.solverstate = f.read()
        with open(os.path.join(work, "base_iter_3.caffemodel"), "rb") as f:
            self.caffemodel = f.read()


def _forward(net):
    import numpy as np
    rng = np.random.RandomState(0)
    for name in net.inputs:
        net.blobs[name].data[...] = rng.rand(*net.blobs[name].shape)
    net.forward()
    net.backward()


def _bounded_work(text, most=20):
    """A mutated solver whose iteration counts are cut to `most`: two billion
    test iterations are an honest request that Caffe would run too, not a
    finding. Text that does not parse is kept as it is, for the parser."""
    from google.protobuf import text_format
    from pycaffe_lite.proto import caffe_pb2 as pb
    try:
        param = text_format.Parse(text, pb.SolverParameter())
    except text_format.ParseError:
        return text
    param.max_iter = min(param.max_iter, most)
    param.iter_size = min(param.iter_size, most)
    param.test_iter[:] = [min(t, most) for t in param.test_iter]
    return text_format.MessageToString(param)


def _write_mutated(path, raw, message, bytes_odds, rng):
    """The serialized `message` `raw` written to `path`, its bytes mutated
    (with odds `bytes_odds`) or its fields."""
    raw = mutate_bytes(raw, rng) if rng.random() < bytes_odds else \
        mutate_message(message.FromString(raw), rng).SerializeToString()
    with open(path, "wb") as f:
        f.write(raw)


def run_case(category, fx, rng, case_dir):
    import lmdb
    import numpy as np
    import pycaffe_lite as caffe
    from pycaffe_lite.proto import caffe_pb2 as pb
    from pycaffe_lite.tools.compute_image_mean import mean_of_db

    def path(name):
        return os.path.join(case_dir, name)
    if category == "selftest":      # the harness's own check: each outcome in turn
        kind = ("ran", "clear", "traceback", "crash", "hang")[int(os.path.basename(case_dir)[4:]) % 5]
        if kind == "clear":
            raise caffe.FormatError("a clear error")
        if kind == "traceback":
            raise IndexError("deep inside")
        if kind == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if kind == "hang":
            time.sleep(3600)
    elif category == "net":
        with open(path("net.prototxt"), "w") as f:
            f.write(mutate_text(rng.choice(NETS), rng))
        _forward(caffe.Net(path("net.prototxt"), caffe.TEST))
    elif category == "solver":
        text = SOLVER % dict(net=fx.net_path, prefix=path("snap"), type=rng.choice(
            ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"]))
        with open(path("solver.prototxt"), "w") as f:
            f.write(_bounded_work(mutate_text(text, rng)))
        caffe.get_solver(path("solver.prototxt")).solve()
    elif category in ("datum", "lmdb", "binaryproto"):
        db = path("db")
        env = lmdb.open(db, map_size=1 << 22)
        damaged = rng.randrange(len(fx.datums))     # one record: the others run
        with env.begin(write=True) as txn:
            for i, v in enumerate(fx.datums):
                if category == "datum" and i == damaged:
                    if rng.random() < 0.5:
                        v = mutate_bytes(v, rng)
                    else:
                        v = mutate_message(pb.Datum.FromString(v), rng).SerializeToString()
                txn.put(b"%08d" % i, v)
            if category == "datum" and rng.random() < 0.2:
                txn.put(b"zz_empty", b"")
        env.close()
        if category == "lmdb":
            with open(os.path.join(db, "data.mdb"), "rb") as f:
                data = f.read()
            with open(os.path.join(db, "data.mdb"), "wb") as f:
                f.write(mutate_bytes(data, rng))
        mean = ""
        if category == "binaryproto":
            _write_mutated(path("mean.binaryproto"), fx.mean, pb.BlobProto, 0.5, rng)
            mean = 'mean_file: "%s"' % path("mean.binaryproto")
            caffe.io.blobproto_to_array(caffe.protoio.read_blob_proto(path("mean.binaryproto")))
        with open(path("net.prototxt"), "w") as f:
            f.write(DATA_NET % dict(db=db, mean=mean))
        net = caffe.Net(path("net.prototxt"), caffe.TRAIN)
        net.forward()
        net.forward()
        del net
        if category != "binaryproto":
            mean_of_db(db)
    elif category == "solverstate":
        _write_mutated(path("resume.solverstate"), fx.solverstate, pb.SolverState, 0.4, rng)
        with open(path("solver.prototxt"), "w") as f:
            f.write(SOLVER % dict(net=fx.net_path, prefix=path("snap"), type="SGD"))
        s = caffe.get_solver(path("solver.prototxt"))
        s.restore(path("resume.solverstate"))
        s.step(1)
    elif category == "caffemodel":
        _write_mutated(path("w.caffemodel"), fx.caffemodel, pb.NetParameter, 0.4, rng)
        net = caffe.Net(fx.net_path, caffe.TEST, weights=path("w.caffemodel"))
        net.forward()
    else:
        raise ValueError("unknown category %s" % category)


class _Hang(BaseException):
    pass


def worker(category, seed, start, count, work, timeout):
    """Run cases [start, start + count) of a category; one JSON line each."""
    import shutil
    import pycaffe_lite as caffe
    from pycaffe_lite import blob
    blob._memory_bytes = lambda: 1 << 30      # a 1 GB machine: huge blobs are our error, not a swap storm
    fx = Fixture(work)

    def on_alarm(signum, frame):
        raise _Hang()
    signal.signal(signal.SIGALRM, on_alarm)
    for index in range(start, start + count):
        print(json.dumps({"start": index}), flush=True)
        rng = random.Random("%s-%d-%d" % (category, seed, index))
        case_dir = os.path.join(work, "case%d" % index)
        os.makedirs(case_dir)
        signal.alarm(timeout)
        try:
            run_case(category, fx, rng, case_dir)
            outcome, detail = "ran", ""
        except caffe.CaffeError as e:
            outcome, detail = "clear", str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        except _Hang:
            outcome, detail = "hang", "over %d s" % timeout
        except Exception as e:
            import traceback
            outcome, detail = "traceback", "%s: %s | %s" % (type(e).__name__, str(e)[:200],
                                                            traceback.format_exc().strip().splitlines()[-3][:200])
        finally:
            signal.alarm(0)
        print(json.dumps({"index": index, "outcome": outcome, "detail": detail}), flush=True)
        shutil.rmtree(case_dir, ignore_errors=True)


def run_category(category, seed, cases, timeout=30, start=0):
    """Outcomes {index: (outcome, detail)} of cases [start, start + cases),
    each crash or hang of the worker named by the case it was running."""
    results = {}
    index = start
    while index < start + cases:
        work = tempfile.mkdtemp(prefix="fuzz-%s-" % category)
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", category, str(seed),
                                 str(index), str(start + cases - index), work, str(timeout)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=work,
                                env=dict(os.environ, GLOG_minloglevel="3"))
        current = None
        deadline = time.time() + timeout * 4 + 60 * 5
        for line in proc.stdout:
            msg = json.loads(line)
            if "start" in msg:
                current = msg["start"]
                deadline = time.time() + timeout * 4 + 120
            else:
                results[msg["index"]] = (msg["outcome"], msg["detail"])
                index = msg["index"] + 1
            if time.time() > deadline:
                proc.kill()
                break
        code = proc.wait()
        subprocess.run(["rm", "-rf", work])
        if index < start + cases and current is not None and current not in results:
            results[current] = ("crash", "worker died (exit %s)" % code)
            index = current + 1
        elif index < start + cases and current is None:
            raise RuntimeError("the fuzz worker for %s could not start (exit %s)" % (category, code))
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("categories", nargs="*", default=list(CATEGORIES))
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    ap.add_argument("--one", nargs=3, metavar=("CATEGORY", "SEED", "INDEX"))
    args = ap.parse_args(argv)
    if args.worker:
        category, seed, start, count, work, timeout = args.worker
        return worker(category, int(seed), int(start), int(count), work, int(timeout))
    if args.one:
        import pycaffe_lite  # noqa: F401
        category, seed, index = args.one[0], int(args.one[1]), int(args.one[2])
        work = tempfile.mkdtemp()
        fx = Fixture(work)
        case_dir = os.path.join(work, "case")
        os.makedirs(case_dir)
        run_case(category, fx, random.Random("%s-%d-%d" % (category, seed, index)), case_dir)
        print("ran")
        return 0
    bad = 0
    for category in args.categories:
        results = run_category(category, args.seed, args.cases)
        counts = {}
        for outcome, _ in results.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        print("%-12s %s" % (category, ", ".join("%s %d" % kv for kv in sorted(counts.items()))))
        for i, (outcome, detail) in sorted(results.items()):
            if outcome not in ("ran", "clear"):
                bad += 1
                print("   case %d: %s %s   (replay: python tests/fuzz.py --one %s %d %d)"
                      % (i, outcome, detail, category, args.seed, i))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
