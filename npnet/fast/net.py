"""FastNet: a network's layers run by the backend's kernels, where those are proven equal.

    fast = FastNet(net)                  # the same layers, parameters and buffers as net
    logits = fast(x)                     # x (N, C, H, W): moved to (C, H, W, N) once
    fast.backward(grad_logits)           # every .grad, as net.backward would fill it

Planning, once per structure, mode, input shape and code version (then cached):
1. The layers are listed in order (a nested Sequential is opened).
2. Each position gets a kernel: the fused BatchNorm -> Sigmoid -> AvgPool2d step where it fits,
   otherwise the layer's own kernel from KERNELS; a layer with no kernel runs as written.
3. Each kernel is proven against its layers (proof.py); one that disagrees is replaced by the
   layers as written, with a one-line FastPathWarning that names the layer and the difference.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import NamedTuple

import numpy as np

from ..activation import ReLU, Sigmoid, Tanh
from ..batchnorm import BatchNorm
from ..container import Sequential, check_each_layer_once
from ..conv import Conv2d
from ..flatten import Flatten
from ..linear import Linear
from ..module import (CacheState, Module, Parameter, check_not_empty, no_cache_message,
                      parameter_changed_message)
from ..pool import AvgPool2d, MaxPool2d
from .activation import SigmoidKernel
from .batchnorm import BatchNormKernel
from .conv import Conv2dKernel
from .fused import BatchNormSigmoidPoolKernel
from .kernel import AsWritten, LayoutFree
from .layout import from_batch_last, to_batch_last
from .linear import FlattenKernel, LinearKernel
from .pool import AvgPool2dKernel
from .proof import (PROOF_BATCH, ROOTS, code_versions, own_methods, prove,
                    reference_output)

# layer class -> its kernel (a subclass that keeps its parent's forward and backward too)
KERNELS = {
    Conv2d: Conv2dKernel, BatchNorm: BatchNormKernel, AvgPool2d: AvgPool2dKernel,
    Linear: LinearKernel, Flatten: FlattenKernel, Sigmoid: SigmoidKernel,
    Tanh: LayoutFree, ReLU: LayoutFree,
    MaxPool2d: AsWritten,  # known, and run as written: no faster kernel yet
    Sequential: AsWritten,  # a nested one with hooks (one without is opened up)
}
MAX_PLANS = 16  # plans kept per FastNet (train and eval, a few input shapes)


class LastPass(NamedTuple):
    """What a FastNet's forward leaves for its backward."""

    kernels: list        # the plan that ran, each kernel holding its cache
    output_shape: tuple  # batch first, for checking grad_out
    versions: list       # (parameter, its version) as the forward computed with it


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


class FastNet:
    """Runs ``net`` on the fast backend. Everything but running it is ``net``'s own:
    ``parameters()``, ``state_dict()``, ``training``, ``dtype``... reach the wrapped network.

    - net: a Sequential (or any single layer)
    - input_grad: whether ``backward`` returns dL/dx. False (the default) for images, which
      need no gradient: the first layer then skips that work, as PyTorch does for inputs that
      do not require grad.
    """

    def __init__(self, net: Module, input_grad: bool = False):
        if not isinstance(net, Module):
            raise TypeError(f"FastNet expects an npnet Module; got {type(net).__name__}")
        self.net = net
        self.input_grad = input_grad
        self._plans: dict = {}
        self._verdicts: dict = {}
        self._announced: set = set()  # the notices said (each once)
        # what the last forward left for backward: a LastPass; AS_WRITTEN: the network ran
        # as written, its layers keep their caches;
        # None: no forward (or a failed one); a CacheState: used up by backward, or dropped
        # by astype
        self._last = None

    def __getattr__(self, name):
        # only called for names FastNet itself lacks: parameters, state_dict, modules, ...
        if name == "net":
            raise AttributeError(name)
        return getattr(self.net, name)

    def train(self, mode: bool = True) -> "FastNet":
        self.net.train(mode)
        return self

    def eval(self) -> "FastNet":
        return self.train(False)

    def astype(self, dtype) -> "FastNet":
        self.net.astype(dtype)
        if isinstance(self._last, LastPass):  # what the kernels kept has the old dtype
            self._release()
            self._last = CacheState.CONVERTED
        return self

    def __repr__(self) -> str:
        return f"FastNet({self.net!r})"

    # --------------------------------------------------------------------------- running
    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, ...) -> the network's output, batch first."""
        x = np.asarray(x)
        self._release()  # the last pass's caches: a new forward makes them useless
        self._last = None  # until this forward has run through: no backward after a failed one
        if x.ndim < 2:  # no batch axis to move: nothing to gain
            out = self.net(x)
            self._last = AS_WRITTEN
            return out
        check_not_empty("FastNet", x.shape)  # before any kernel changes any state
        kernels = self.plan(x)
        # the version of every parameter this forward computes with, for backward to check
        versions = [(param, param.version) for param in _parameters(kernels)]
        h = to_batch_last(x)
        for kernel in kernels:
            y = kernel.forward(h)
            if not kernel.fires_hooks:
                for layer in kernel.layers:  # only a single-layer kernel can have hooks
                    for hook in layer._forward_hooks:
                        hook(layer, from_batch_last(h), from_batch_last(y))
            h = y
        out = np.ascontiguousarray(from_batch_last(h))
        for hook in self.net._forward_hooks:
            hook(self.net, x, out)
        self._last = LastPass(kernels, out.shape, versions)
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """grad_out (shape of the last output) -> dL/dx (None unless ``input_grad``); adds every
        parameter's gradient into its ``.grad``. Refused, as a layer's backward is, before a
        forward, a second time after one, after astype, and after a parameter changed."""
        if self._last is AS_WRITTEN:
            return self.net.backward(grad_out)
        if not isinstance(self._last, LastPass):
            raise RuntimeError(no_cache_message("FastNet", self._last))
        kernels, out_shape, versions = self._last
        for param, version in versions:
            if param.version != version:
                raise RuntimeError(parameter_changed_message(self._name_of(param), version,
                                                             param.version))
        grad_out = np.asarray(grad_out)
        if grad_out.shape != out_shape:
            raise ValueError(f"FastNet.backward expects grad_out of shape {out_shape} (the "
                             f"shape of its last output); got {grad_out.shape}")
        grad = to_batch_last(grad_out)
        for position, kernel in reversed(list(enumerate(kernels))):
            grad_in = kernel.backward(grad)
            if not kernel.fires_hooks:
                for layer in kernel.layers:
                    for hook in layer._backward_hooks:
                        hook(layer, from_batch_last(grad),
                             None if grad_in is None else from_batch_last(grad_in))
            if grad_in is None and position > 0:
                layer = kernel.layers[0]
                raise TypeError(f"{layer.short_name()}.backward returned None; it must return "
                                f"dL/dx, the gradient with respect to its input")
            grad = grad_in
        self._release()
        self._last = CacheState.SPENT
        if grad is None or not self.input_grad:
            return None
        return np.ascontiguousarray(from_batch_last(grad))

    def _release(self) -> None:
        """Drop what the kernels of the last pass kept for backward (the activations)."""
        if isinstance(self._last, LastPass):
            for kernel in self._last.kernels:
                kernel.cache = None

    def _name_of(self, param: Parameter) -> str:
        """'Linear(256, 120).weight (layer 9)': how an error names a parameter."""
        for module_name, module in self.net.named_modules():
            for name, value in vars(module).items():
                if value is param:
                    where = f" (layer {module_name})" if module_name else ""
                    return f"{module.short_name()}.{name}{where}"
        return repr(param)  # no longer in the network

    # -------------------------------------------------------------------------- planning
    def layers(self) -> list:
        """The layers in the order they run: nested Sequentials opened (unless hooked). A
        layer object at two places is refused, as Sequential refuses it."""
        check_each_layer_once(self.net, "FastNet")

        def open_up(module):
            if isinstance(module, Sequential) and not (module._forward_hooks
                                                       or module._backward_hooks):
                return [leaf for layer in module.layers for leaf in open_up(layer)]
            return [module]
        if isinstance(self.net, Sequential):
            return [leaf for layer in self.net.layers for leaf in open_up(layer)]
        return [self.net]

    def plan(self, x: np.ndarray) -> list:
        """The kernels that run a batch like x, made (and proven) on first use."""
        layers = self.layers()
        key = (tuple(map(id, layers)), code_versions(layers),
               tuple(layer.training for layer in layers),
               tuple(bool(layer._forward_hooks or layer._backward_hooks) for layer in layers),
               x.shape[1:], x.dtype.str, self.input_grad)
        kernels = self._plans.get(key)
        if kernels is None:
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
                self._verdicts.clear()
            kernels = self._plans[key] = self._make_plan(layers, x.shape[1:])
        return kernels

    def _make_plan(self, layers: list, sample_shape: tuple) -> list:
        names = {id(module): name for name, module in self.net.named_modules()}
        x = np.random.default_rng(0).standard_normal((PROOF_BATCH, *sample_shape))
        kernels, position, fused_failure = [], 0, None
        while position < len(layers):
            input_grad = self.input_grad or position > 0
            if x is None:  # an earlier layer could not run on a float64 copy: no more proofs
                kernels += [AsWritten(layer) for layer in layers[position:]]
                break
            group = layers[position:position + 3]
            if BatchNormSigmoidPoolKernel.fits(group) and all(
                    kernel_for(layer) not in (None, AsWritten) and not _replaced(layer)
                    for layer in group):
                verdict, y = self._prove(BatchNormSigmoidPoolKernel, group, x, input_grad)
                if verdict.agrees:
                    kernels.append(BatchNormSigmoidPoolKernel(*group, input_grad=input_grad))
                    x, position = y, position + 3
                    continue
                fused_failure = (group, verdict, position + 3)  # told if no layer is to blame
            kernel, x, agrees = self._single(layers[position], x, input_grad, names)
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
            return kernel_class(layer, input_grad=input_grad), y, True
        self._notice([layer], names, f"differs from its fast kernel by "
                     f"{verdict.difference:.1e} in {verdict.where}", mode=True)
        return AsWritten(layer), y, False

    def _prove(self, kernel_class, layers: list, x: np.ndarray, input_grad: bool):
        """``proof.prove``, remembered per layers, their code and mode, and input shape."""
        key = (kernel_class, tuple(map(id, layers)), code_versions(layers),
               tuple(layer.training for layer in layers), input_grad, x.shape[1:])
        if key not in self._verdicts:
            self._verdicts[key] = prove(kernel_class, layers, x, input_grad)
        return self._verdicts[key]

    def _notice(self, layers: list, names: dict, what: str, mode: bool = False) -> None:
        """Warn once per FastNet: '... <what> (<mode> mode); running it as written'."""
        which = " -> ".join(_describe(layer, names.get(id(layer))) for layer in layers)
        if mode:
            what += " (training mode)" if layers[0].training else " (evaluation mode)"
        message = f"npnet.fast: {which} {what}; running it as written"
        if message not in self._announced:
            self._announced.add(message)
            warnings.warn(message, FastPathWarning, stacklevel=_first_frame_outside_npnet())


AS_WRITTEN = "as written"  # FastNet._last when the network ran as written (input of ndim < 2)


def _parameters(kernels) -> list:
    """The parameters of the layers the kernels stand for, in the order backward meets the
    layers (last layer first, as Sequential's backward checks them)."""
    return [value for kernel in reversed(kernels) for layer in reversed(kernel.layers)
            for value in vars(layer).values() if isinstance(value, Parameter)]


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
