"""``net.summary(input_shape)``: what every layer outputs, holds and costs.

The seed notebook prints the output shape of every layer for a 1x1x224x224 input. The summary
is that trace grown up: for every layer, its output shape, its number of parameters and the
multiply-accumulates of its forward pass, with totals::

    >>> print(npnet.models.lenet().summary((1, 28, 28)))
    Input (1, 1, 28, 28)
    #   Layer                               Output shape    Params     MACs    FLOPs
    --------------------------------------------------------------------------------
    0   Conv2d(1, 6, kernel_size=5)         (1, 6, 24, 24)     156   86,400  172,800
    1   BatchNorm(6, num_dims=4)            (1, 6, 24, 24)      12        0        0
    ...
    15  Linear(84, 10)                      (1, 10)            850      840    1,680
    --------------------------------------------------------------------------------
        Total                                               44,878  281,640  563,280

What is counted
---------------
- **Params**: entries of the layer's ``Parameter`` arrays (weights, biases, BatchNorm's gamma
  and beta). Buffers such as BatchNorm's moving_mean and moving_var are state, not
  parameters, and are not counted.
- **MACs** (multiply-accumulates, ``a += w * x``) of the forward pass, for the batch of
  ``batch_size`` (1 by default). Only the two layers whose work is a matrix product count:

      Conv2d:  MACs = N * O * Ho * Wo * C * kh * kw
               (each of the N*O*Ho*Wo outputs is a sum of C*kh*kw products)
      Linear:  MACs = N * in_features * out_features
               (each of the N*out outputs is a sum of in products)

  for input (N, C, H, W) -> output (N, O, Ho, Wo), and (N, in) -> (N, out).
- **FLOPs** = 2 * MACs (one multiply and one add each), the convention of most papers.

Not counted, as MACs or at all: bias additions, BatchNorm, pooling, activations (Sigmoid,
Tanh, ReLU), Flatten. Each of these does a few operations per element of its input or
output, so its cost grows with the size of the activations, not with the product of two
dimensions; in LeNet they add up to a few percent of the MACs. Add your own rule for
another layer type to ``MAC_COUNTERS``.

Shapes come from a real forward pass on zeros (one batch of ``batch_size``) in evaluation
mode, so they are exactly what the layers compute. Each layer's ``forward`` is called
directly, so hooks (e.g. an ``instruments.Recorder``) do not see it, and every layer's mode
and cache are put back afterwards. Evaluation mode leaves BatchNorm's moving averages alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .concat import Concat
from .conv import Conv2d
from .linear import Linear
from .module import Module
from .residual import Residual


def conv2d_macs(layer: Conv2d, input_shape: tuple, output_shape: tuple) -> int:
    """N * O * Ho * Wo * C * kh * kw for input (N, C, H, W) -> output (N, O, Ho, Wo)."""
    N, O, Ho, Wo = output_shape
    kh, kw = layer.kernel_size
    return N * O * Ho * Wo * layer.in_channels * kh * kw


def linear_macs(layer: Linear, input_shape: tuple, output_shape: tuple) -> int:
    """N * in_features * out_features for input (N, in) -> output (N, out)."""
    N = math.prod(input_shape[:-1])
    return N * layer.in_features * layer.out_features


# layer type -> function(layer, input_shape, output_shape) returning its forward MACs
MAC_COUNTERS = {Conv2d: conv2d_macs, Linear: linear_macs}


def count_macs(layer: Module, input_shape: tuple, output_shape: tuple) -> int:
    """Forward MACs of one layer; 0 for types without a rule in ``MAC_COUNTERS``."""
    for layer_type, counter in MAC_COUNTERS.items():
        if isinstance(layer, layer_type):
            return counter(layer, tuple(input_shape), tuple(output_shape))
    return 0


@dataclass
class SummaryRow:
    """One layer: its dotted name in the network (``'4'``, or ``'2.0'`` when nested), its
    short name, output shape, parameter count and forward MACs (FLOPs = 2 * MACs)."""

    name: str
    layer: str
    output_shape: tuple
    params: int
    macs: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass
class Summary:
    """The rows of ``summary``; ``str()`` (and ``print``) gives the table."""

    input_shape: tuple
    rows: list

    @property
    def total_params(self) -> int:
        return sum(row.params for row in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(row.macs for row in self.rows)

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    def __str__(self) -> str:
        header = ("#", "Layer", "Output shape", "Params", "MACs", "FLOPs")
        body = [(row.name, row.layer, _shape(row.output_shape), f"{row.params:,}",
                 f"{row.macs:,}", f"{row.flops:,}") for row in self.rows]
        total = ("", "Total", "", f"{self.total_params:,}", f"{self.total_macs:,}",
                 f"{self.total_flops:,}")
        widths = [max(len(line[k]) for line in [header, *body, total])
                  for k in range(len(header))]

        def line(cells):
            left = [cells[k].ljust(widths[k]) for k in range(3)]  # text columns
            right = [cells[k].rjust(widths[k]) for k in range(3, 6)]  # number columns
            return "  ".join(left + right).rstrip()

        rule = "-" * len(line(header))
        return "\n".join([f"Input {_shape(self.input_shape)}", line(header), rule,
                          *map(line, body), rule, line(total),
                          "MACs: multiply-accumulates of Conv2d and Linear; FLOPs = 2 x MACs"])

    __repr__ = __str__  # so a bare ``net.summary(...)`` in a REPL shows the table


def _shape(shape: tuple) -> str:
    return "(" + ", ".join(str(size) for size in shape) + ")"


def summary(net: Module, input_shape: tuple, batch_size: int = 1, dtype=None) -> Summary:
    """Trace ``net`` on zeros of shape (batch_size, *input_shape); returns a ``Summary``.

    - net: a Sequential (nested ones, Residual and Concat blocks, and any iterable container,
      are walked into) or any single layer
    - input_shape: the shape of one sample, without the batch axis, e.g. (1, 28, 28)
    - batch_size: N of the traced batch; MACs are for the whole batch
    - dtype: of the zeros; by default the network's own (float32 unless converted)
    """
    input_shape = tuple(int(size) for size in input_shape)
    dtype = np.dtype(dtype or net.dtype or np.float32)
    x = np.zeros((batch_size, *input_shape), dtype=dtype)
    saved = [(module, module.training, module.cache) for module in net.modules()]
    net.eval()
    rows = []
    try:
        _trace(net, x, "", rows)
    finally:
        for module, training, cache in saved:
            object.__setattr__(module, "training", training)
            object.__setattr__(module, "cache", cache)
    return Summary((batch_size, *input_shape), rows)


def _trace(module: Module, x: np.ndarray, name: str, rows: list) -> np.ndarray:
    """Run ``module`` on x, appending one row per leaf layer (and one per join of branches);
    returns the output."""
    if hasattr(module, "__iter__"):  # a Sequential: its layers, in order
        for position, layer in enumerate(module):
            x = _trace(layer, x, _join(name, str(position)), rows)
        return x
    if isinstance(module, (Residual, Concat)):  # each branch, then the row of the join
        outputs = [_trace(branch, x, _join(name, branch_name), rows)
                   for branch_name, branch in module.named_children()]
        if isinstance(module, Residual):
            if module.shortcut is None:
                outputs.append(x)
            if outputs[0].shape != outputs[1].shape:
                raise ValueError(f"summary: layer {name or '(net)'} Residual cannot add its "
                                 f"body's output {outputs[0].shape} to its shortcut's "
                                 f"{outputs[1].shape}")
            y, what = outputs[0] + outputs[1], "Residual: body + shortcut"
        else:
            y, what = np.concatenate(outputs, axis=1), "Concat: join on channels"
        rows.append(SummaryRow(name or "0", what, tuple(y.shape), 0, 0))
        return y
    try:
        y = module.forward(x)  # forward, not __call__: hooks should not see this trace
    except (ValueError, TypeError) as error:
        raise ValueError(f"summary: layer {name or '(net)'} {module.short_name()} cannot take "
                         f"the previous layer's output {x.shape}: {error}") from error
    params = sum(param.data.size for _, param in module.named_parameters())
    rows.append(SummaryRow(name or "0", module.short_name(), tuple(y.shape), params,
                           count_macs(module, x.shape, y.shape)))
    return y


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
