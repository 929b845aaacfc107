"""Optimizers: SGD, Adam and AdamW, with PyTorch's conventions, step for step.

An optimizer uses the gradients that backward left in ``param.grad``; it computes none. For
each parameter p with gradient g (shapes equal), one ``step()`` does:

SGD (docs/backprop.md, section "SGD"):

    g = g + weight_decay * p                  (L2 penalty weight_decay/2 * ||p||^2)
    v = momentum * v + g                      (only when momentum > 0; v starts at g)
    p = p - lr * v                            (v = g without momentum)

Adam and AdamW (section "Adam and AdamW"), at step t = 1, 2, ... with m and v starting at 0:

    g = g + weight_decay * p                  (Adam: the L2 gradient, as in SGD)
    p = p * (1 - lr * weight_decay)           (AdamW instead: decay p itself, "decoupled")
    m = beta1 * m + (1 - beta1) * g           (running mean of the gradients)
    v = beta2 * v + (1 - beta2) * g * g       (running mean of their squares, entrywise)
    p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Every optimizer has ``lr`` (a learning-rate schedule, npnet/lr_scheduler.py, sets it),
``step()``, ``zero_grad()`` and ``state_dict()`` / ``load_state_dict()``. A state is what
``npnet.save_checkpoint`` can store: numbers, and lists with one array (or None) per
parameter.
"""

from __future__ import annotations

import math

import numpy as np

from .module import Parameter


class SGD:
    """``SGD(params, lr, momentum=0.0, weight_decay=0.0)`` with ``step()`` and ``zero_grad()``."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = checked_parameters("SGD", params)
        check_hyperparameters(lr, momentum, weight_decay)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.velocity = [None] * len(self.params)

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"

    def zero_grad(self) -> None:
        for param in self.params:
            param.zero_grad()

    def step(self) -> None:
        for index, param in enumerate(self.params):
            grad = param.grad
            if self.weight_decay:
                grad = grad + self.weight_decay * param.data
            if self.momentum:
                if self.velocity[index] is None or self.velocity[index].shape != grad.shape:
                    self.velocity[index] = np.array(grad, copy=True)
                else:
                    self.velocity[index] *= self.momentum
                    self.velocity[index] += grad
                grad = self.velocity[index]
            # in place, so views of param.data held elsewhere stay valid; the scalar is cast
            # so float32 parameters stay float32. (Python assigns the result back to
            # param.data, which counts as a new version: a backward of a forward made before
            # this step is refused.)
            param.data -= param.data.dtype.type(self.lr) * grad

    def state_dict(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "velocity": [None if v is None else v.copy() for v in self.velocity]}

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``; everything is checked before anything changes."""
        check_state_keys("SGD", state, self.state_dict())
        check_hyperparameters(state["lr"], state["momentum"], state["weight_decay"],
                              lr_may_be_zero=True)
        velocity = checked_arrays("SGD", "velocity", state["velocity"], self.params)
        self.lr, self.momentum = state["lr"], state["momentum"]
        self.weight_decay = state["weight_decay"]
        self.velocity = velocity


class Adam:
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)`` with
    ``step()`` and ``zero_grad()``: ``torch.optim.Adam`` (without amsgrad), step for step.

    State, named as PyTorch names it (each list has one array per parameter, of its shape
    and dtype, and None before the first step):

    - exp_avg: m, the running mean of the gradients
    - exp_avg_sq: v, the running mean of the squared gradients (entrywise)
    - step_count: t, the steps taken so far; the bias corrections 1 - beta^t depend on it

    ``weight_decay`` adds ``weight_decay * p`` to the gradient before m and v see it, the
    gradient of an L2 penalty (as in SGD). ``AdamW`` decays p directly instead.
    """

    decoupled_weight_decay = False  # AdamW: True

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        who = type(self).__name__
        self.params = checked_parameters(who, params)
        check_adam_hyperparameters(who, lr, betas, eps, weight_decay)
        self.lr, self.eps, self.weight_decay = float(lr), float(eps), float(weight_decay)
        self.betas = (float(betas[0]), float(betas[1]))
        self.step_count = 0
        self.exp_avg = [None] * len(self.params)
        self.exp_avg_sq = [None] * len(self.params)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
                f"weight_decay={self.weight_decay})")

    def zero_grad(self) -> None:
        for param in self.params:
            param.zero_grad()

    def step(self) -> None:
        self.step_count += 1
        t = self.step_count
        beta1, beta2 = self.betas
        # m and v start at 0, so they are biased towards 0: with a constant gradient g,
        # m = (1 - beta1^t) g after t steps. Dividing by 1 - beta^t removes the bias.
        # (Grouped as torch groups it: step_size and the square root of the second one.)
        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        for index, param in enumerate(self.params):
            grad = param.grad
            dtype = param.data.dtype.type  # scalars cast, so float32 stays float32
            if self.weight_decay:
                if self.decoupled_weight_decay:  # AdamW: shrink p; m and v never see it
                    param.data *= dtype(1 - self.lr * self.weight_decay)
                else:  # Adam: the L2 penalty's gradient weight_decay * p joins g
                    grad = grad + dtype(self.weight_decay) * param.data
            exp_avg, exp_avg_sq = self._moments(index, param)
            exp_avg *= dtype(beta1)                        # m = beta1 m + (1 - beta1) g
            exp_avg += dtype(1 - beta1) * grad
            exp_avg_sq *= dtype(beta2)                     # v = beta2 v + (1 - beta2) g^2
            exp_avg_sq += dtype(1 - beta2) * grad * grad
            denom = np.sqrt(exp_avg_sq) / dtype(bias_correction2_sqrt) + dtype(self.eps)
            # in place, as in SGD: views of param.data stay valid, and the version counts
            param.data -= dtype(step_size) * exp_avg / denom

    def _moments(self, index: int, param: Parameter) -> tuple[np.ndarray, np.ndarray]:
        """(m, v) of parameter ``index``: zeros at its first step, in the parameter's dtype
        (converted if ``astype`` changed it since)."""
        if self.exp_avg[index] is None:
            self.exp_avg[index] = np.zeros_like(param.data)
            self.exp_avg_sq[index] = np.zeros_like(param.data)
        elif self.exp_avg[index].shape != param.shape:
            raise ValueError(
                f"{type(self).__name__}: parameter {index} changed shape from "
                f"{self.exp_avg[index].shape} to {param.shape} since the last step; its "
                f"running means exp_avg and exp_avg_sq no longer fit. Make a new optimizer")
        elif self.exp_avg[index].dtype != param.dtype:
            self.exp_avg[index] = self.exp_avg[index].astype(param.dtype)
            self.exp_avg_sq[index] = self.exp_avg_sq[index].astype(param.dtype)
        return self.exp_avg[index], self.exp_avg_sq[index]

    def state_dict(self) -> dict:
        """Settings and per-parameter arrays. betas are two numbers, beta1 and beta2 (a
        checkpoint stores a list as one array per parameter); decoupled_weight_decay tells
        an AdamW's state from an Adam's."""
        beta1, beta2 = self.betas
        return {"lr": self.lr, "beta1": beta1, "beta2": beta2, "eps": self.eps,
                "weight_decay": self.weight_decay,
                "decoupled_weight_decay": self.decoupled_weight_decay,
                "step_count": self.step_count,
                "exp_avg": [None if m is None else m.copy() for m in self.exp_avg],
                "exp_avg_sq": [None if v is None else v.copy() for v in self.exp_avg_sq]}

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``; everything is checked before anything changes."""
        who = type(self).__name__
        check_state_keys(who, state, self.state_dict())
        if state["decoupled_weight_decay"] is not self.decoupled_weight_decay:
            other = "AdamW" if state["decoupled_weight_decay"] else "Adam"
            raise ValueError(f"{who}.load_state_dict: the state is an {other}'s (its "
                             f"weight decay works differently); load it into an {other}")
        check_adam_hyperparameters(who, state["lr"], (state["beta1"], state["beta2"]),
                                   state["eps"], state["weight_decay"], lr_may_be_zero=True)
        step_count = state["step_count"]
        if (not isinstance(step_count, (int, np.integer)) or isinstance(step_count, bool)
                or step_count < 0):
            raise ValueError(f"{who}.load_state_dict: step_count must be a whole number >= 0; "
                             f"got {step_count!r}")
        exp_avg = checked_arrays(who, "exp_avg", state["exp_avg"], self.params)
        exp_avg_sq = checked_arrays(who, "exp_avg_sq", state["exp_avg_sq"], self.params)
        # every step moves every parameter: after the first, all have m and v; before, none
        have = sum(array is not None for array in exp_avg + exp_avg_sq)
        expected = 0 if step_count == 0 else 2 * len(self.params)
        if have != expected:
            raise ValueError(f"{who}.load_state_dict: after {step_count} steps it expects "
                             f"{expected} exp_avg and exp_avg_sq arrays (one each per "
                             f"parameter after the first step, none before); the state has "
                             f"{have}")
        if any(v is not None and np.any(v < 0) for v in exp_avg_sq):
            raise ValueError(f"{who}.load_state_dict: exp_avg_sq holds negative values; a "
                             f"running mean of squares cannot (the state is damaged)")
        self.lr, self.eps = float(state["lr"]), float(state["eps"])
        self.betas = (float(state["beta1"]), float(state["beta2"]))
        self.weight_decay = float(state["weight_decay"])
        self.step_count = int(step_count)
        self.exp_avg, self.exp_avg_sq = exp_avg, exp_avg_sq


class AdamW(Adam):
    """``AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)``:
    ``torch.optim.AdamW``, step for step. Adam with *decoupled* weight decay: each step first
    shrinks the parameter, ``p = p * (1 - lr * weight_decay)``, and m and v see the loss's
    gradient alone. (In Adam, weight_decay * p is added to the gradient, so it is divided by
    sqrt(v) like the rest: parameters with large gradients are barely decayed.)
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


# ------------------------------------------------------------------------------ checks
def checked_parameters(who: str, params) -> list[Parameter]:
    """``params`` as a list of Parameter objects, each once (a parameter given twice would
    move twice as far as the others)."""
    params = list(params)
    if not params:
        raise ValueError(f"{who} got an empty parameter list")
    first_position = {}
    for position, param in enumerate(params):
        if not isinstance(param, Parameter):
            raise TypeError(f"{who} expects Parameter objects (model.parameters()); item "
                            f"{position} is {type(param).__name__}")
        if id(param) in first_position:
            raise ValueError(
                f"{who} got the same {param!r} twice (items {first_position[id(param)]} "
                f"and {position}): each step would move it twice. Pass each parameter "
                f"once; model.parameters() lists a shared one once")
        first_position[id(param)] = position
    return params


RULES = {"> 0": lambda number: number > 0, ">= 0": lambda number: number >= 0,
         "in [0, 1)": lambda number: 0 <= number < 1}


def check_hyperparameter(who: str, name: str, value, rule: str, why: str = "") -> None:
    """Refuse a value that would make every step wrong: ``value`` must be a finite number
    that satisfies ``rule`` (a key of RULES); a NaN would turn every weight into NaN."""
    expected = f"{name} to be a finite number {rule}{why}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{who} expects {expected}; got {value!r}") from None
    if not math.isfinite(number) or not RULES[rule](number):
        raise ValueError(f"{who} expects {expected}; got {value!r}")


def check_hyperparameters(lr: float, momentum: float, weight_decay: float,
                          lr_may_be_zero: bool = False) -> None:
    """SGD's: lr a finite number > 0, momentum and weight_decay finite and >= 0. A saved
    state may hold lr = 0 (lr_may_be_zero): a schedule can anneal it there."""
    check_hyperparameter("SGD", "lr", lr, ">= 0" if lr_may_be_zero else "> 0")
    check_hyperparameter("SGD", "momentum", momentum, ">= 0")
    check_hyperparameter("SGD", "weight_decay", weight_decay, ">= 0")


def check_adam_hyperparameters(who: str, lr: float, betas, eps: float, weight_decay: float,
                               lr_may_be_zero: bool = False) -> None:
    """Adam's and AdamW's: lr > 0, betas a pair in [0, 1), eps > 0, weight_decay >= 0, all
    finite. (PyTorch accepts eps = 0; here it is refused: a parameter whose gradient is
    exactly 0 would get the update 0 / 0 = NaN.)"""
    check_hyperparameter(who, "lr", lr, ">= 0" if lr_may_be_zero else "> 0")
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise TypeError(f"{who} expects betas to be a pair (beta1, beta2), e.g. (0.9, 0.999); "
                        f"got {betas!r}")
    for index, beta in enumerate(betas):
        check_hyperparameter(who, f"betas[{index}]", beta, "in [0, 1)")
    check_hyperparameter(who, "eps", eps, "> 0",
                         " (with eps = 0 a gradient of exactly 0 gives the update 0 / 0)")
    check_hyperparameter(who, "weight_decay", weight_decay, ">= 0")


def check_state_keys(who: str, state, own: dict) -> None:
    """Refuse a state whose entries are not those of ``own`` (this optimizer's state_dict):
    e.g. an SGD's state given to an Adam."""
    if not isinstance(state, dict):
        raise TypeError(f"{who}.load_state_dict expects a dict from {who}.state_dict(); got "
                        f"{type(state).__name__}")
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    if missing or unexpected:
        whose = (" (it is an SGD's state)" if "velocity" in state
                 else " (it is an Adam's or AdamW's state)" if "exp_avg" in state else "")
        raise KeyError(f"{who}.load_state_dict: the state does not fit a {who}{whose}; "
                       f"missing entries {missing}, unexpected entries {unexpected}")


def checked_arrays(who: str, key: str, arrays, params: list) -> list:
    """A per-parameter list of state arrays (each an array or None), each checked against
    its parameter's shape and copied in its dtype."""
    if not isinstance(arrays, (list, tuple)) or len(arrays) != len(params):
        got = (f"{len(arrays)} entries" if isinstance(arrays, (list, tuple))
               else type(arrays).__name__)
        raise ValueError(f"{who}.load_state_dict: '{key}' must be a list with one array (or "
                         f"None) per parameter, {len(params)} entries; got {got}")
    checked = []
    for index, (array, param) in enumerate(zip(arrays, params)):
        if array is not None:
            array = np.asarray(array)
            if array.shape != param.shape:
                raise ValueError(f"{who}.load_state_dict: '{key}' entry {index} has shape "
                                 f"{array.shape}; parameter {index} has shape {param.shape}")
            array = np.array(array, dtype=param.dtype, copy=True)
        checked.append(array)
    return checked
