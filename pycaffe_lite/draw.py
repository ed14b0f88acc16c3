"""pycaffe's caffe.draw."""
from .tools.draw_net import draw_net_to_file, net_to_dot  # noqa: F401
