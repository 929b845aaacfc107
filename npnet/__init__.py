"""npnet: a neural-network framework in pure NumPy, written to show how backpropagation works.

Every layer has an explicit ``forward`` and ``backward``; ``Sequential`` chains them.
``npnet.fast`` runs the same layers faster, where it has shown it gives the same numbers.
``import npnet`` needs numpy alone (tqdm and matplotlib are imported where they are used).
"""

# the submodules, so that npnet.models.lenet(), npnet.instruments.Recorder ... work
from . import (checkpoint, datasets, fast, init, instruments, models, plots,  # noqa: F401
               plots_inside, summary, train)
from .activation import ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm, BatchTooSmallError, batch_norm, batch_norm_backward
from .checkpoint import load_checkpoint, save_checkpoint
from .container import Sequential
from .conv import Conv2d
from .fast import FastNet, FastPathWarning
from .flatten import Flatten
from .gradcheck import gradcheck
from .init import init_xavier, xavier_uniform_
from .linear import Linear
from .loss import CrossEntropyLoss
from .module import Module, Parameter
from .optim import SGD
from .pool import AvgPool2d, MaxPool2d
from .rng import manual_seed
from .train import evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "AvgPool2d", "BatchNorm", "BatchTooSmallError", "Conv2d", "CrossEntropyLoss", "FastNet", "FastPathWarning",
    "Flatten", "Linear", "MaxPool2d", "Module", "Parameter", "ReLU", "SGD", "Sequential",
    "Sigmoid", "Tanh", "batch_norm", "batch_norm_backward", "evaluate", "fit", "gradcheck",
    "init_xavier", "load_checkpoint", "manual_seed", "save_checkpoint", "xavier_uniform_",
]
