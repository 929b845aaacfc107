"""npnet: a neural-network framework in pure NumPy, written to show how backpropagation works.

Every layer has an explicit ``forward`` and ``backward``; ``Sequential`` chains them.
``npnet.fast`` runs the same layers faster, where it has shown it gives the same numbers.
``import npnet`` needs numpy alone (tqdm and matplotlib are imported where they are used).
"""

# the submodules, so that npnet.models.lenet(), npnet.instruments.Recorder ... work
from . import (checkpoint, datasets, exercises, fast, init, instruments,  # noqa: F401
               lr_scheduler, models, plots, plots_inside, summary, train)
from .activation import ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm, BatchTooSmallError, batch_norm, batch_norm_backward
from .checkpoint import load_checkpoint, save_checkpoint
from .concat import Concat
from .container import Sequential
from .conv import Conv2d
from .dropout import Dropout
from .fast import FastNet, FastPathWarning
from .flatten import Flatten
from .gradcheck import gradcheck
from .identity import Identity
from .init import init_xavier, xavier_uniform_
from .linear import Linear
from .loss import CrossEntropyLoss
from .module import Module, Parameter
from .optim import SGD, Adam, AdamW
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .residual import Residual
from .rng import manual_seed
from .train import evaluate, fit
from .update_bn import update_bn

__version__ = "0.1.0"

__all__ = [
    "Adam", "AdamW", "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm", "BatchTooSmallError", "Concat",
    "Conv2d", "CrossEntropyLoss", "Dropout", "FastNet", "FastPathWarning", "Flatten", "Identity",
    "Linear", "MaxPool2d", "Module", "Parameter", "ReLU", "Residual", "SGD", "Sequential",
    "Sigmoid", "Tanh", "batch_norm", "batch_norm_backward", "evaluate", "fit", "gradcheck",
    "init_xavier", "load_checkpoint", "manual_seed", "save_checkpoint", "update_bn",
    "xavier_uniform_",
]
