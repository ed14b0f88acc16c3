"""glog's environment variables act as in Caffe, for the library and the
tools: GLOG_minloglevel, GLOG_logtostderr, GLOG_log_dir, GLOG_v, the tools'
log files. Each case runs in a process of its own: glog reads its flags when
the program starts (for us, when pycaffe_lite is imported)."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NET = '''name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
'''

SCRIPT = '''
import os
os.environ.update(%(env)r)             # as scripts do, before the import
import pycaffe_lite as caffe
from pycaffe_lite import glog
net = caffe.Net(%(model)r, caffe.TEST)
glog.warning("a warning")
glog.error("an error")
glog.vlog(1, "verbose one")
glog.vlog(3, "verbose three")
print("done")
'''


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_")}
    env.update(extra)
    return env


def _script(tmp_path, env):
    model = tmp_path / "net.prototxt"
    model.write_text(NET)
    out = subprocess.run([sys.executable, "-c", SCRIPT % dict(env=env, model=str(model))], capture_output=True,
                         text=True, cwd=REPO, env=_env())
    assert out.returncode == 0 and "done" in out.stdout, out.stderr
    return out.stderr


def test_scripts_log_to_stderr_by_default(tmp_path):
    err = _script(tmp_path, {})
    assert "Initializing net" in err and "a warning" in err and "an error" in err
    assert "verbose" not in err


@pytest.mark.parametrize("level, shown, hidden", [
    ("1", ["a warning", "an error"], ["Initializing net"]),
    ("2", ["an error"], ["Initializing net", "a warning"]),
    ("3", [], ["Initializing net", "a warning", "an error"]),
])
def test_glog_minloglevel_set_before_import_silences(tmp_path, level, shown, hidden):
    err = _script(tmp_path, {"GLOG_minloglevel": level})
    for text in shown:
        assert text in err
    for text in hidden:
        assert text not in err


def test_glog_v_shows_verbose_lines_up_to_its_level(tmp_path):
    err = _script(tmp_path, {"GLOG_v": "2"})
    assert "verbose one" in err and "verbose three" not in err


def _tool(tmp_path, **env):
    out = subprocess.run([sys.executable, "-m", "pycaffe_lite.tools.upgrade_net_proto_text",
                          str(tmp_path / "net.prototxt"), str(tmp_path / "up.prototxt")],
                         capture_output=True, text=True, cwd=REPO, env=_env(**env))
    assert out.returncode == 0, out.stderr
    return out.stderr


def test_tools_write_glog_files_in_glog_log_dir_and_log_to_stderr(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    logs = tmp_path / "logs"
    logs.mkdir()
    err = _tool(tmp_path, GLOG_log_dir=str(logs))
    assert "Wrote upgraded NetParameter text proto" in err           # alsologtostderr, as Caffe's tools set
    link = logs / "upgrade_net_proto_text.INFO"
    assert link.is_symlink()
    target = os.readlink(link)
    assert target.startswith("upgrade_net_proto_text.") and ".log.INFO." in target
    text = link.read_text()
    assert text.startswith("Log file created at:") and "Wrote upgraded NetParameter text proto" in text


def test_glog_logtostderr_writes_no_files(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    logs = tmp_path / "logs"
    logs.mkdir()
    err = _tool(tmp_path, GLOG_log_dir=str(logs), GLOG_logtostderr="1")
    assert "Wrote upgraded" in err and not os.listdir(logs)


def test_glog_minloglevel_quiets_the_tools(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    logs = tmp_path / "logs"
    logs.mkdir()
    err = _tool(tmp_path, GLOG_log_dir=str(logs), GLOG_minloglevel="1")
    assert "Wrote upgraded" not in err and not os.listdir(logs)
    assert (tmp_path / "up.prototxt").exists()
