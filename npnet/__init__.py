"""npnet: a neural-network framework in pure NumPy, written to show how backpropagation works.

Every layer has an explicit ``forward`` and ``backward``; ``Sequential`` chains them.
"""

from .activation import ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm, batch_norm, batch_norm_backward
from .checkpoint import load_checkpoint, save_checkpoint
from .container import Sequential
from .conv import Conv2d
from .flatten import Flatten
from .gradcheck import gradcheck
from .init import init_xavier, manual_seed, xavier_uniform_
from .linear import Linear
from .loss import CrossEntropyLoss
from .module import Module, Parameter
from .optim import SGD
from .pool import AvgPool2d, MaxPool2d
from .train import evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "AvgPool2d", "BatchNorm", "Conv2d", "CrossEntropyLoss", "Flatten", "Linear", "MaxPool2d",
    "Module", "Parameter", "ReLU", "SGD", "Sequential", "Sigmoid", "Tanh", "batch_norm",
    "batch_norm_backward", "evaluate", "fit", "gradcheck", "init_xavier", "load_checkpoint",
    "manual_seed", "save_checkpoint", "xavier_uniform_",
]
