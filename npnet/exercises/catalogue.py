"""The exercises: one per layer of LeNet-BN, each a ``backward`` the learner writes.

An ``Exercise`` names the library's layer (the reference, and the base class of the stub, so
the forward, the parameters and the checks are the library's own), the configurations it is
checked on, the known mistakes (mistakes.py) and what its stub shows (stubs.py).

The configurations are chosen so that no mistake can hide behind a special case:
- float64, a batch of more than one sample (a missing or extra 1/N shows), random parameters
  and a random upstream gradient (never all ones: BatchNorm's dL/dx of a constant g is 0);
- rectangular shapes: in != out for Linear, kh != kw, H != W (a transpose does not fit), and
  for Linear and Conv2d one square case too (where it fits and only the values are wrong);
- overlapping windows, stride < kernel (`=` and `+=` differ), and padding (a crop to forget);
- for max pooling, inputs of small integers, so that windows have tied maxima;
- BatchNorm in both modes, with gamma, beta and the moving statistics not ones and zeros;
- one float32 case each, which catches a result of the wrong dtype (``np.zeros(shape)`` is
  float64 whatever the input).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .. import activation, batchnorm, conv, linear, loss, pool
from ..activation import Sigmoid
from ..batchnorm import BatchNorm
from ..conv import Conv2d
from ..linear import Linear
from ..loss import CrossEntropyLoss
from ..pool import AvgPool2d, MaxPool2d
from ..windows import im2col, pad
from .mistakes import MISTAKES, Mistake


class WindowsCache(NamedTuple):
    """What the max-pooling exercise's forward keeps: the windows, not their winners."""

    windows: np.ndarray  # (N, C, Ho, Wo, kh, kw), a view of x padded with -inf
    x_shape: tuple       # (N, C, H, W), to size dL/dx


class MaxPool2dKeepingWindows(MaxPool2d):
    """MaxPool2d whose forward keeps every window, so that its backward has to find each
    window's winner itself (the library's forward keeps only the winners, and would leave
    the learner no tie to get wrong)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.checked_input(x)
        windows = im2col(pad(x, self.padding, -np.inf), self.kernel_size, self.stride)
        self.cache = WindowsCache(windows, x.shape)
        return windows.max(axis=(4, 5))


@dataclass
class Config:
    """One case an exercise is checked on: a layer, an input, an upstream gradient."""

    why: str                 # what this case is there to catch, for the report
    args: tuple = ()         # the layer's constructor arguments
    kwargs: dict = field(default_factory=dict)
    x_shape: tuple = ()      # the input's shape (the loss: the logits' (N, K))
    dtype: type = np.float64
    training: bool = True
    ties: bool = False       # an input of small integers: windows with tied maxima
    logit_scale: float = 1.0
    seed: int = 0


@dataclass
class Exercise:
    """A layer's backward as an exercise: what the learner writes and how it is checked."""

    name: str                # the stub's file name and the command line's word: "linear"
    layer: type              # the library's layer: the reference and the stub's base class
    configs: list[Config]
    section: str             # the section of docs/backprop.md
    module: object           # the library module of the layer (its docstring has the math)
    formulas: list[tuple[str, int]]  # (first line's text, number of lines) of that docstring
    function: object         # the library function that computes the gradients, for the stub
    unpack: list[str]        # lines of the stub after the library's own first lines
    todo: list[str]          # what the learner writes, as comment lines
    doc: str                 # the backward's docstring in the stub: what it returns and adds
    given_until: str = "check_grad("  # the library's backward lines the stub keeps end here
    base: type | None = None  # the stub's base class, when not ``layer``
    imports: list[str] = field(default_factory=list)
    grad_in_name: str = "dL/dx"
    method: str = "backward"

    @property
    def mistakes(self) -> list[Mistake]:
        return MISTAKES.get(self.name, [])

    @property
    def stub_base(self) -> type:
        return self.base or self.layer

    @property
    def class_name(self) -> str:
        return self.layer.__name__

    @property
    def file_name(self) -> str:
        return f"{self.name}.py"

    def __repr__(self) -> str:
        return (f"Exercise({self.name}: {self.class_name}.{self.method}, "
                f"{len(self.configs)} configurations, {len(self.mistakes)} known mistakes)")


WINDOWS = ["from npnet.windows import col2im  # adds overlapping windows back; or write the "
           "loop yourself"]

EXERCISES: dict[str, Exercise] = {exercise.name: exercise for exercise in [
    Exercise(
        name="linear", layer=Linear, section="Linear", module=linear,
        formulas=[("dL/dx = dL/dy W", 3)], function=linear.linear_backward,
        unpack=["x, weight = cache  # x (N, in), weight (out, in)"],
        todo=["Return grad_x. Add (+=) dL/dW into self.weight.grad and dL/db into",
              "self.bias.grad (self.bias is None for Linear(..., bias=False))."],
        doc="grad_out (N, out) -> grad_x (N, in); adds dL/dW (out, in) into self.weight.grad\n"
            "and dL/db (out,) into self.bias.grad.",
        configs=[
            Config("in != out, so that a transposed product does not fit", (3, 5),
                   x_shape=(4, 3)),
            Config("a square layer, where a transposed product fits and only its values are "
                   "wrong", (4, 4), x_shape=(6, 4), seed=1),
            Config("float32", (7, 2), x_shape=(5, 7), dtype=np.float32, seed=2),
        ]),
    Exercise(
        name="conv2d", layer=Conv2d, section="Conv2d", module=conv,
        formulas=[("y[n, o, i, j] = b[o]", 1), ("dL/dW = tensordot(dL/dy, cols)", 5)],
        function=conv.conv2d_backward, imports=WINDOWS,
        unpack=["cols, weight, x_shape, stride, padding = cache",
                "# cols (N, C, Ho, Wo, kh, kw): the windows of the padded input",
                "# weight (O, C, kh, kw); x_shape (N, C, H, W); stride (sh, sw); "
                "padding (ph, pw)"],
        todo=["Return grad_x (N, C, H, W), the padding cut off. Add (+=) dL/dW into",
              "self.weight.grad and dL/db into self.bias.grad."],
        doc="grad_out (N, O, Ho, Wo) -> grad_x (N, C, H, W); adds dL/dW (O, C, kh, kw) into\n"
            "self.weight.grad and dL/db (O,) into self.bias.grad.",
        configs=[
            Config("a square kernel, stride 1: windows overlap", (2, 3, 3), x_shape=(2, 2, 5, 6)),
            Config("a 2x3 kernel, stride (1, 2), padding 1: overlapping windows and a crop",
                   (3, 2, (2, 3)), {"stride": (1, 2), "padding": 1}, x_shape=(2, 3, 6, 7),
                   seed=1),
            Config("float32, stride 2, padding 1", (1, 2, 3), {"stride": 2, "padding": 1},
                   x_shape=(3, 1, 5, 5), dtype=np.float32, seed=2),
        ]),
    Exercise(
        name="avg_pool2d", layer=AvgPool2d, section="Pooling", module=pool,
        formulas=[("y[n, c, i, j] = 1/(kh kw) sum", 2)], function=pool.avg_pool2d_backward,
        imports=WINDOWS,
        unpack=["x_shape, (kh, kw), stride, padding = cache  # x_shape (N, C, H, W)"],
        todo=["Return grad_x (N, C, H, W), the padding cut off."],
        doc="grad_out (N, C, Ho, Wo) -> grad_x (N, C, H, W).",
        configs=[
            Config("a 3x2 kernel, stride 1: windows overlap", ((3, 2),), {"stride": 1},
                   x_shape=(2, 3, 5, 6)),
            Config("stride 2 < kernel 3, padding 1", (3,), {"stride": 2, "padding": 1},
                   x_shape=(2, 2, 6, 7), seed=1),
            Config("float32, the seed's default stride (= kernel)", (2,),
                   x_shape=(3, 2, 4, 6), dtype=np.float32, seed=2),
        ]),
    Exercise(
        name="max_pool2d", layer=MaxPool2d, base=MaxPool2dKeepingWindows, section="Pooling",
        module=pool, formulas=[("y[n, c, i, j] = max_{a, b}", 2)],
        function=pool.max_pool2d_backward,
        imports=["from npnet.exercises import WindowsCache",
                 "from npnet.windows import col2im, im2col, pad  # col2im: see conv2d.py"],
        unpack=["windows, x_shape = cache  # windows (N, C, Ho, Wo, kh, kw), x_shape (N, C, H, W)",
                "kh, kw = self.kernel_size"],
        todo=["Return grad_x (N, C, H, W): each window's gradient goes to its maximum, the",
              "first one in row-major order where several tie (as PyTorch); padding cut off."],
        doc="grad_out (N, C, Ho, Wo) -> grad_x (N, C, H, W).",
        configs=[
            Config("small integers (tied maxima), a 2x3 kernel, stride 1 (overlap)",
                   ((2, 3),), {"stride": 1}, x_shape=(2, 3, 5, 6), ties=True),
            Config("random values, stride 2 < kernel 3, padding 1", (3,),
                   {"stride": 2, "padding": 1}, x_shape=(2, 2, 6, 7), seed=1),
            Config("float32, small integers, the default stride (= kernel)", (2,),
                   x_shape=(3, 2, 4, 6), dtype=np.float32, ties=True, seed=2),
        ]),
    Exercise(
        name="sigmoid", layer=Sigmoid, section="Activations", module=activation,
        formulas=[("Sigmoid:  y = 1 / (1 + exp(-x))", 1)], function=None,
        unpack=["# y: the output the forward kept (any shape)"],
        todo=["Return grad_x, the shape of y."],
        doc="grad_out (any shape, that of the output y) -> grad_x (the same shape).",
        configs=[
            Config("a batch of vectors", x_shape=(4, 7)),
            Config("images (N, C, H, W), values up to +-4", x_shape=(2, 3, 4, 5), seed=1),
            Config("float32", x_shape=(5, 3), dtype=np.float32, seed=2),
        ]),
    Exercise(
        name="batch_norm", layer=BatchNorm, section="BatchNorm", module=batchnorm,
        formulas=[("batch_mean = mean(x, axes)", 4), ("Backward — derivation", 2),
                  ("dL/dgamma = sum(dL/dy * x_hat, axes)", 3)],
        function=batchnorm.batch_norm_backward,
        unpack=["x_hat, inv_std, gamma, training = cache",
                "# x_hat: shape of x; inv_std, gamma: (1, F) or (1, F, 1, 1); training: whether",
                "# the statistics came from this batch",
                "axes = (0,) if x_hat.ndim == 2 else (0, 2, 3)"],
        todo=["Return grad_x, the shape of x. Add (+=) dL/dgamma into self.gamma.grad and",
              "dL/dbeta into self.beta.grad, both (1, F) or (1, F, 1, 1) (keepdims=True)."],
        doc="grad_out (N, F) or (N, F, H, W) -> grad_x (the same shape); adds dL/dgamma and\n"
            "dL/dbeta, (1, F) or (1, F, 1, 1), into self.gamma.grad and self.beta.grad.",
        configs=[
            Config("(N, F) in training mode", (3, 2), x_shape=(6, 3)),
            Config("(N, C, H, W) in training mode: statistics over (0, 2, 3)", (2, 4),
                   x_shape=(3, 2, 3, 4), seed=1),
            Config("(N, F) in evaluation mode: the moving statistics are constants", (3, 2),
                   x_shape=(5, 3), training=False, seed=2),
            Config("float32, (N, C, H, W) in training mode", (3, 4), x_shape=(2, 3, 2, 3),
                   dtype=np.float32, seed=3),
        ]),
    Exercise(
        name="cross_entropy", layer=CrossEntropyLoss, section="Softmax cross-entropy",
        module=loss, formulas=[("log_softmax(z)[n, k] = z[n, k]", 2), ("'mean':  dL/dz =", 1)],
        function=None, given_until="N = log_probs.shape[0]",
        unpack=["# log_probs (N, K): log softmax(logits); labels (N,): integers in [0, K)"],
        todo=["Return dL/dlogits (N, K) for the default reduction='mean', in the logits'",
              "dtype. (The 'sum' and 'none' reductions are npnet/loss.py's; not checked here.)"],
        doc="-> dL/dlogits (N, K), the gradient of the mean loss (grad_losses: None).",
        grad_in_name="dL/dlogits",
        configs=[
            Config("N = 5 samples, K = 3 classes", x_shape=(5, 3)),
            Config("N = 4, K = 7, logits up to +-20", x_shape=(4, 7), logit_scale=10.0,
                   seed=1),
            Config("float32", x_shape=(6, 4), dtype=np.float32, seed=2),
        ]),
]}


def find_exercise(name_or_class) -> Exercise:
    """The exercise for a name ("linear"), a file stem, or a layer class (its subclass)."""
    if isinstance(name_or_class, Exercise):
        return name_or_class
    if isinstance(name_or_class, str):
        if name_or_class in EXERCISES:
            return EXERCISES[name_or_class]
        raise KeyError(f"no exercise named {name_or_class!r}; the exercises are: "
                       f"{', '.join(EXERCISES)}")
    for exercise in EXERCISES.values():
        if isinstance(name_or_class, type) and issubclass(name_or_class, exercise.layer):
            return exercise
    raise KeyError(f"{name_or_class!r} is not a subclass of a layer with an exercise "
                   f"({', '.join(e.class_name for e in EXERCISES.values())})")
