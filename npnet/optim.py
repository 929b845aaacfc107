"""Stochastic gradient descent, with PyTorch's momentum and weight-decay conventions.

For each parameter p with gradient g (shapes equal):

    g = g + weight_decay * p                  (L2 penalty weight_decay/2 * ||p||^2)
    v = momentum * v + g                      (only when momentum > 0; v starts at g)
    p = p - lr * v                            (v = g without momentum)

(docs/backprop.md, section "SGD".)
"""

from __future__ import annotations

import math

import numpy as np

from .module import Parameter


class SGD:
    """``SGD(params, lr, momentum=0.0, weight_decay=0.0)`` with ``step()`` and ``zero_grad()``."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = list(params)
        if not self.params:
            raise ValueError("SGD got an empty parameter list")
        first_position = {}
        for position, param in enumerate(self.params):
            if not isinstance(param, Parameter):
                raise TypeError(f"SGD expects Parameter objects (model.parameters()); item "
                                f"{position} is {type(param).__name__}")
            if id(param) in first_position:  # it would move twice as far as the others
                raise ValueError(
                    f"SGD got the same {param!r} twice (items {first_position[id(param)]} "
                    f"and {position}): each step would move it twice. Pass each parameter "
                    f"once; model.parameters() lists a shared one once")
            first_position[id(param)] = position
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
        check_hyperparameters(state["lr"], state["momentum"], state["weight_decay"])
        self.lr, self.momentum = state["lr"], state["momentum"]
        self.weight_decay = state["weight_decay"]
        self.velocity = [None if v is None else np.array(v) for v in state["velocity"]]


def check_hyperparameters(lr: float, momentum: float, weight_decay: float) -> None:
    """Refuse values that would make every step wrong: lr must be a finite number > 0,
    momentum and weight_decay finite and >= 0 (a NaN would turn every weight into NaN)."""
    for name, value, smallest in (("lr", lr, None), ("momentum", momentum, 0),
                                  ("weight_decay", weight_decay, 0)):
        rule = f"a finite number {'> 0' if smallest is None else '>= 0'}"
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"SGD expects {name} to be {rule}; got {value!r}") from None
        if not math.isfinite(number) or number < 0 or (smallest is None and number == 0):
            raise ValueError(f"SGD expects {name} to be {rule}; got {value!r}")
