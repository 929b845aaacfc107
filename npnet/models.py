"""The networks of the seed chapter, built from npnet layers.

- ``lenet(batch_norm=True)``: the book's LeNet with batch normalization for 28x28 images
  (d2l 7.5): two Conv2d(5) + BatchNorm + Sigmoid + AvgPool2d(2, 2) stages, then three Linear
  layers, the first two followed by BatchNorm + Sigmoid. 1x28x28 -> 10 logits.
- ``lenet(batch_norm=False)``: the book's original sigmoid LeNet (d2l 6.6), whose first
  convolution pads by 2 so the 28x28 input keeps its size.
- ``lenet_224()``: the seed notebook's variant for 224x224 input (AvgPool2d(5) in the second
  stage, Linear(7056, 120)), whose shape trace examples/shape_trace.py prints.
"""

from __future__ import annotations

from .activation import Sigmoid
from .batchnorm import BatchNorm
from .container import Sequential
from .conv import Conv2d
from .flatten import Flatten
from .linear import Linear
from .pool import AvgPool2d


def lenet(batch_norm: bool = True, num_classes: int = 10) -> Sequential:
    """LeNet for (N, 1, 28, 28) images -> (N, num_classes) logits."""
    if not batch_norm:
        return Sequential(
            Conv2d(1, 6, kernel_size=5, padding=2), Sigmoid(),
            AvgPool2d(kernel_size=2, stride=2),
            Conv2d(6, 16, kernel_size=5), Sigmoid(),
            AvgPool2d(kernel_size=2, stride=2), Flatten(),
            Linear(16 * 5 * 5, 120), Sigmoid(),
            Linear(120, 84), Sigmoid(),
            Linear(84, num_classes),
        )
    return Sequential(
        Conv2d(1, 6, kernel_size=5), BatchNorm(6, num_dims=4), Sigmoid(),
        AvgPool2d(kernel_size=2, stride=2),
        Conv2d(6, 16, kernel_size=5), BatchNorm(16, num_dims=4), Sigmoid(),
        AvgPool2d(kernel_size=2, stride=2), Flatten(),
        Linear(16 * 4 * 4, 120), BatchNorm(120, num_dims=2), Sigmoid(),
        Linear(120, 84), BatchNorm(84, num_dims=2), Sigmoid(),
        Linear(84, num_classes),
    )


def lenet_224(num_classes: int = 10) -> Sequential:
    """The seed's LeNet-BN for (N, 1, 224, 224) images, layer for layer."""
    return Sequential(
        Conv2d(1, 6, kernel_size=5), BatchNorm(6, num_dims=4), Sigmoid(),
        AvgPool2d(kernel_size=2, stride=2),
        Conv2d(6, 16, kernel_size=5), BatchNorm(16, num_dims=4), Sigmoid(),
        AvgPool2d(kernel_size=5), Flatten(),
        Linear(7056, 120), BatchNorm(120, num_dims=2), Sigmoid(),
        Linear(120, 84), BatchNorm(84, num_dims=2), Sigmoid(),
        Linear(84, num_classes),
    )
