"""The seed notebook's shape trace, in npnet.

Builds the seed's LeNet with batch normalization for 224x224 input and prints each layer's
output shape for one random image, line for line as the notebook does:

    Conv2d output shape:     (1, 6, 220, 220)
    ...
    Linear output shape:     (1, 10)

Run: python examples/shape_trace.py
"""

import numpy as np

import npnet
from npnet.models import lenet_224


def trace(net, x):
    """Run x through the layers one by one; return [(layer name, output shape), ...]."""
    rows = []
    for layer in net:
        x = layer(x)
        rows.append((type(layer).__name__, x.shape))
    return rows


def main():
    npnet.manual_seed(0)
    # evaluation mode: BatchNorm refuses to train on one value per feature (the notebook's
    # own function computes on and outputs beta); the shapes are the same in either mode
    net = lenet_224().eval()
    X = np.random.default_rng(0).random((1, 1, 224, 224), dtype=np.float32)
    for name, shape in trace(net, X):
        print(name, "output shape:\t", shape)


if __name__ == "__main__":
    main()
