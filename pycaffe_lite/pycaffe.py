"""pycaffe's caffe.pycaffe module: the Net and the solvers with their Python
conveniences (here they live in net.py and solver.py), NCCL and Timer."""
from .net import Net  # noqa: F401
from .parallel import NCCL  # noqa: F401
from .solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver,  # noqa: F401
                     SGDSolver)
from .timer import Timer  # noqa: F401
