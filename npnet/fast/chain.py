"""Chain: layers run one after another by proven kernels, on batch-last arrays.

A FastNet is one Chain (its network's layers, nested Sequentials opened). A residual or
concatenation block's kernel (branches.py) holds one Chain per branch, so a whole ResNet runs
on the batch-last layout, each branch's layers on their own kernels.

Planning, once per chain, structure, mode, input shape and code version (then cached):
1. The layers are listed in order (a nested Sequential without hooks is opened).
2. Each position gets a kernel: the fused BatchNorm -> Sigmoid -> AvgPool2d step where it fits,
   otherwise the layer's own kernel from KERNELS; a layer with no kernel runs as written.
3. Each kernel is proven against its layers (proof.py); one that disagrees is replaced by the
   layers as written, with a one-line FastPathWarning that names the layer and the difference.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings

import numpy as np

from ..activation import ReLU, Sigmoid, Tanh
from ..batchnorm import BatchNorm
from ..concat import Concat
from ..container import Sequential
from ..conv import Conv2d
from ..dropout import Dropout
from ..flatten import Flatten
from ..identity import Identity
from ..linear import Linear
from ..module import Module
from ..pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from ..residual import Residual
from .activation import SigmoidKernel
from .batchnorm import BatchNormKernel
from .branches import ConcatKernel, ResidualKernel
from .conv import Conv2dKernel
from .conv_block import ConvBlockEvalKernel
from .fused import BatchNormSigmoidPoolKernel
from .kernel import AsWritten, LayoutFree
from .layout import from_batch_last
from .linear import FlattenKernel, LinearKernel
from .pool import AdaptiveAvgPool2dKernel, AvgPool2dKernel
from .proof import PROOF_BATCH, ROOTS, code_versions, own_methods, prove, reference_output
from .workers import alone

# layer class -> its kernel (a subclass that keeps its parent's forward and backward too)
KERNELS = {
    Conv2d: Conv2dKernel, BatchNorm: BatchNormKernel, AvgPool2d: AvgPool2dKernel,
    Linear: LinearKernel, Flatten: FlattenKernel, Sigmoid: SigmoidKernel,
    Tanh: LayoutFree, ReLU: LayoutFree,
    AdaptiveAvgPool2d: AdaptiveAvgPool2dKernel, Identity: LayoutFree,
    Residual: ResidualKernel, Concat: ConcatKernel,  # each branch a Chain of its own
    MaxPool2d: AsWritten,  # known, and run as written: no faster kernel yet
    Dropout: AsWritten,  # its mask is drawn in the layer's own order: batch first
    Sequential: AsWritten,  # a nested one with hooks (one without is opened up)
}
# kernels that stand for a few layers in a row, and how many: tried in this order before the
# layers' own kernels
FUSED = ((ConvBlockEvalKernel, 4), (BatchNormSigmoidPoolKernel, 3))
MAX_PLANS = 16  # plans kept per chain (train and eval, a few input shapes)


class FastPathWarning(UserWarning):
    """The backend runs a layer as written: it has no kernel for it, or its kernel disagrees."""


def kernel_for(layer: Module):
    """The kernel class for ``layer``'s type, or None. A subclass gets its parent's kernel only
    if it keeps the parent's forward and backward (e.g. it changes ``__init__`` only): one
    that writes its own must run them."""
    for cls in type(layer).__mro__:
        if cls in KERNELS:
            own_code = any(getattr(type(layer), name) is not getattr(cls, name)
                           for name in ROOTS)
            return None if own_code else KERNELS[cls]
    return None


def open_up(module: Module) -> list:
    """The layers a chain runs for ``module``: a Sequential without hooks is opened
    (recursively), anything else is one layer."""
    if isinstance(module, Sequential) and not (module._forward_hooks or module._backward_hooks):
        return [leaf for layer in module.layers for leaf in open_up(layer)]
    return [module]


class Chain:
    """``layers_of()`` (the layers, listed afresh at each forward) run in order by kernels.

    - forward(x): x batch-last -> the output, batch-last; fires the hooks of the layers
    - backward(grad_out): -> dL/dx (None when ``input_grad`` is False and the first kernel
      skips it); adds every parameter's gradient into its ``.grad``
    """

    def __init__(self, layers_of, planner: "Planner", input_grad: bool):
        self.layers_of, self.planner, self.input_grad = layers_of, planner, input_grad
        self._plans: dict = {}
        self.kernels = None  # the plan the last forward ran, holding its caches

    def plan(self, sample_shape: tuple, dtype) -> list:
        """The kernels that run a batch of samples of ``sample_shape`` (batch left out) and
        ``dtype``, made (and proven) on first use."""
        layers = self.layers_of()
        key = (tuple(map(id, layers)), code_versions(layers),
               tuple(layer.training for layer in layers),
               tuple(bool(layer._forward_hooks or layer._backward_hooks) for layer in layers),
               tuple(sample_shape), np.dtype(dtype).str, self.input_grad)
        kernels = self._plans.get(key)
        if kernels is None:
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            kernels = self._plans[key] = self.planner.make_plan(layers, sample_shape,
                                                                self.input_grad)
        return kernels

    def forward(self, x: np.ndarray, kernels: list | None = None) -> np.ndarray:
        """x (..., N) -> the last layer's output (..., N), by ``kernels`` (the plan for x
        unless given)."""
        if kernels is None:
            kernels = self.plan(x.shape[:-1], x.dtype)
        for kernel in kernels:
            y = kernel.forward(x)
            if not kernel.fires_hooks:
                for layer in kernel.layers:  # only a single-layer kernel can have hooks
                    for hook in layer._forward_hooks:
                        hook(layer, from_batch_last(x), from_batch_last(y))
            x = y
        self.kernels = kernels
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        grad = grad_out
        for position, kernel in reversed(list(enumerate(self.kernels))):
            grad_in = kernel.backward(grad)
            if not kernel.fires_hooks:
                for layer in kernel.layers:
                    for hook in layer._backward_hooks:
                        hook(layer, from_batch_last(grad),
                             None if grad_in is None else from_batch_last(grad_in))
            if grad_in is None and (position > 0 or self.input_grad):
                layer = kernel.layers[0]
                raise TypeError(f"{layer.short_name()}.backward returned None; it must return "
                                f"dL/dx, the gradient with respect to its input")
            grad = grad_in
        return grad

    def release(self) -> None:
        """Drop what the kernels of the last pass kept for backward (the activations)."""
        for kernel in self.kernels or ():
            kernel.release()
        self.kernels = None


class Planner:
    """Makes and proves the plans of the chains of one network, and says (once each) which
    layers run as written. ``root`` names the layers in the notices ('layer 3.0.body.1');
    ``announce=False`` keeps quiet (the plans made inside a proof, on copies)."""

    def __init__(self, root: Module | None = None, announce: bool = True):
        self.root, self.announce = root, announce
        self._verdicts: dict = {}
        self._announced: set = set()

    @property
    def announced(self) -> bool:
        """Whether this planner has named a layer that runs as written."""
        return bool(self._announced)

    def chain(self, layers_of, input_grad: bool) -> Chain:
        return Chain(layers_of, self, input_grad)

    def make_plan(self, layers: list, sample_shape: tuple, input_grad: bool) -> list:
        """Kernels for ``layers`` on samples of ``sample_shape`` (batch-last, batch left out),
        each proven on a float64 batch that has gone through the layers before it."""
        with alone():  # a proof's BatchNorm sums its own batch, whatever thread runs it
            return self._make_plan(layers, sample_shape, input_grad)

    def _make_plan(self, layers: list, sample_shape: tuple, input_grad: bool) -> list:
        if len(self._verdicts) > 64 * MAX_PLANS:
            self._verdicts.clear()
        names = {} if self.root is None or not self.announce else \
            {id(module): name for name, module in self.root.named_modules()}
        x = np.random.default_rng(0).standard_normal((PROOF_BATCH, *sample_shape))
        kernels, position, fused_failure = [], 0, None
        while position < len(layers):
            first_input_grad = input_grad or position > 0
            if x is None:  # an earlier layer could not run on a float64 copy: no more proofs
                kernels += [AsWritten(layer) for layer in layers[position:]]
                break
            fused = self._fused(layers, position, x, first_input_grad)
            if fused is not None:
                kernel, y, verdict = fused
                if kernel is not None:
                    kernels.append(kernel)
                    x, position = y, position + len(kernel.layers)
                    continue
                if fused_failure is None:  # told if no layer of the group is to blame
                    group = layers[position:position + len(verdict[1])]
                    fused_failure = (group, verdict[0], position + len(group))
            kernel, x, agrees = self._single(layers[position], x, first_input_grad, names)
            kernels.append(kernel)
            position += 1
            if fused_failure is not None and not agrees:
                fused_failure = None  # the layer's own notice says why
            if fused_failure is not None and position == fused_failure[2]:
                group, verdict, _ = fused_failure
                self._notice(group, names, f"differ from their fused kernel by "
                             f"{verdict.difference:.1e} in {verdict.where}", mode=True)
                fused_failure = None
        return kernels

    def _fused(self, layers: list, position: int, x: np.ndarray, input_grad: bool):
        """The first of FUSED that fits the layers from ``position`` on and agrees with them:
        (kernel, its output on x, None); (None, None, (verdict, group)) when one fits but
        disagrees; None when none fits."""
        failure = None
        for kernel_class, count in FUSED:
            group = layers[position:position + count]
            if not kernel_class.fits(group) or not all(
                    kernel_for(layer) not in (None, AsWritten) and not _replaced(layer)
                    for layer in group):
                continue
            verdict, y = self._prove(kernel_class, group, x, input_grad)
            if verdict.agrees:
                return kernel_class(*group, input_grad=input_grad), y, None
            failure = failure or (verdict, group)
        return None if failure is None else (None, None, failure)

    def _single(self, layer: Module, x: np.ndarray, input_grad: bool, names: dict):
        """(kernel for one layer, its output on x for the next proof, whether its own kernel
        agreed with it)."""
        kernel_class = kernel_for(layer)
        if _replaced(layer):
            # a function set on the instance may hold the layer itself (a closure): a copy of
            # the layer would still run it on the real one, so it cannot be proven
            self._notice([layer], names, "has its forward or backward replaced on the "
                         "instance by a function")
            return AsWritten(layer), reference_output([layer], x), False
        if kernel_class is None or kernel_class is AsWritten:
            if kernel_class is None:
                self._notice([layer], names, _why_no_kernel(layer))
            return AsWritten(layer), reference_output([layer], x), kernel_class is AsWritten
        verdict, y = self._prove(kernel_class, [layer], x, input_grad)
        if y is None:  # the layer's own code refused the proof's batch (e.g. a wrong shape):
            return AsWritten(layer), None, True  # it will say why when it really runs
        if verdict.agrees:
            return self._build(kernel_class, [layer], input_grad, self), y, True
        self._notice([layer], names, f"differs from its fast kernel by "
                     f"{verdict.difference:.1e} in {verdict.where}", mode=True)
        return AsWritten(layer), y, False

    @staticmethod
    def _build(kernel_class, layers: list, input_grad: bool, planner: "Planner"):
        """A kernel; one with branches plans them with ``planner``."""
        if getattr(kernel_class, "has_branches", False):
            return kernel_class(*layers, input_grad=input_grad, planner=planner)
        return kernel_class(*layers, input_grad=input_grad)

    def _prove(self, kernel_class, layers: list, x: np.ndarray, input_grad: bool):
        """``proof.prove``, remembered per layers, their code and mode, and input shape. A
        kernel with branches is proven with a quiet planner of its own: its branches' layers
        there are copies, and their notices are for the real ones to give."""
        key = (kernel_class, tuple(map(id, layers)), code_versions(layers),
               tuple(layer.training for layer in layers), input_grad, x.shape[1:])
        if key not in self._verdicts:
            make = kernel_class
            if getattr(kernel_class, "has_branches", False):
                make = functools.partial(kernel_class, planner=Planner(announce=False))
            self._verdicts[key] = prove(make, layers, x, input_grad)
        return self._verdicts[key]

    def _notice(self, layers: list, names: dict, what: str, mode: bool = False) -> None:
        """Warn once per planner: '... <what> (<mode> mode); running it as written'."""
        if not self.announce:
            return
        which = " -> ".join(_describe(layer, names.get(id(layer))) for layer in layers)
        if mode:
            what += " (training mode)" if layers[0].training else " (evaluation mode)"
        message = f"npnet.fast: {which} {what}; running it as written"
        if message not in self._announced:
            self._announced.add(message)
            warnings.warn(message, FastPathWarning, stacklevel=_first_frame_outside_npnet())


def _why_no_kernel(layer: Module) -> str:
    for cls in type(layer).__mro__[1:]:
        if cls in KERNELS:
            return f"has its own forward or backward (a subclass of {cls.__name__})"
    return "has no fast kernel"


def _replaced(layer: Module) -> bool:
    """Whether the instance holds its own forward or backward that is not a method bound to it
    (``layer.backward = some_function``, a lambda, a method of another object)."""
    return any(getattr(method, "__self__", None) is not layer
               for method in own_methods(layer))


def _describe(layer: Module, name: str | None) -> str:
    """'BatchNorm(6, num_dims=4) (layer 1)', or for a subclass that keeps its parent's short
    name, 'FrozenBatchNorm, a BatchNorm(6, num_dims=4) (layer 1)'."""
    text = layer.short_name()
    if not text.startswith(type(layer).__name__):
        text = f"{type(layer).__name__}, a {text}"
    return text + (f" (layer {name})" if name else "")


def _first_frame_outside_npnet() -> int:
    """The stacklevel of the caller outside npnet (e.g. the line calling ``fit``), so that the
    warning points at the learner's code, not at npnet's."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level
