"""Learning-rate schedules: ``optimizer.lr`` as a function of the epoch, as in
``torch.optim.lr_scheduler``.

    scheduler = StepLR(optimizer, step_size=10, gamma=0.1)
    for epoch in range(epochs):
        train_one_epoch(...)         # optimizer.step() on every batch
        scheduler.step()             # then the next epoch's learning rate

With lr_0 the optimizer's lr when the schedule is built (``base_lr``) and e the number of
``scheduler.step()`` calls so far (``last_epoch``):

    StepLR:             lr_e = lr_0 * gamma^floor(e / step_size)
    CosineAnnealingLR:  lr_e = eta_min + (lr_0 - eta_min) * (1 + cos(pi e / T_max)) / 2

PyTorch computes both from the current lr, one step at a time (its "recursive form", which
also follows an lr changed by hand in between), and so does npnet, so the numbers are
PyTorch's to the last bit. Derivations in docs/backprop.md, section "Learning-rate
schedules".

A schedule works with any npnet optimizer (SGD, Adam, AdamW): it reads and sets
``optimizer.lr``. Its ``state_dict()`` holds numbers only, so it fits a checkpoint's
``extra`` dict; the optimizer's lr is in the optimizer's own state.
"""

from __future__ import annotations

import math


class LRScheduler:
    """What every schedule shares: ``step()``, ``get_last_lr()``, ``state_dict()`` and
    ``load_state_dict()``. A subclass gives ``get_lr()``: the lr of epoch ``last_epoch``."""

    def __init__(self, optimizer):
        who = type(self).__name__
        lr = getattr(optimizer, "lr", None)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr):
            raise TypeError(f"{who} expects an optimizer with a learning rate .lr (npnet.SGD, "
                            f"Adam, AdamW); got {type(optimizer).__name__} with lr={lr!r}")
        self.optimizer = optimizer
        self.base_lr = float(lr)  # lr_0
        self.last_epoch = 0       # e: how many times step() ran
        self.last_lr = self.base_lr

    def get_lr(self) -> float:
        raise NotImplementedError(f"{type(self).__name__} must implement get_lr")

    def step(self) -> None:
        """Move to the next epoch: set ``optimizer.lr`` to its learning rate. Call it after
        the epoch's ``optimizer.step()`` calls, as in PyTorch."""
        self.last_epoch += 1
        self.optimizer.lr = self.last_lr = self.get_lr()

    def get_last_lr(self) -> list[float]:
        """The learning rate the last ``step()`` set (at first, the optimizer's), in a list as
        PyTorch gives it (one entry per parameter group; npnet's optimizers have one)."""
        return [self.last_lr]

    def state_dict(self) -> dict:
        """The schedule's settings and position, numbers only (JSON-able)."""
        return {name: value for name, value in vars(self).items() if name != "optimizer"}

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()`` of the same kind of schedule (settings included, as in
        PyTorch); everything is checked before anything changes. The optimizer's lr is not
        touched: it is restored with the optimizer's own state."""
        who = type(self).__name__
        own = self.state_dict()
        if not isinstance(state, dict):
            raise TypeError(f"{who}.load_state_dict expects a dict from {who}.state_dict(); "
                            f"got {type(state).__name__}")
        missing = [key for key in own if key not in state]
        unexpected = [key for key in state if key not in own]
        if missing or unexpected:
            raise KeyError(f"{who}.load_state_dict: the state does not fit a {who}; missing "
                           f"entries {missing}, unexpected entries {unexpected}")
        for key, value in state.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f"{who}.load_state_dict: entry '{key}' must be a finite "
                                 f"number; got {value!r}")
            if isinstance(own[key], int) and not float(value).is_integer():
                raise ValueError(f"{who}.load_state_dict: entry '{key}' must be a whole "
                                 f"number; got {value!r}")
        self._check_settings(state)
        if state["last_epoch"] < 0:
            raise ValueError(f"{who}.load_state_dict: entry 'last_epoch' must be >= 0; got "
                             f"{state['last_epoch']!r}")
        for key, value in state.items():
            setattr(self, key, int(value) if isinstance(own[key], int) else float(value))

    def _check_settings(self, settings: dict) -> None:
        """Refuse settings that make no schedule (each subclass its own)."""

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={value}" for key, value in self.state_dict().items()
                             if key not in ("base_lr", "last_epoch", "last_lr"))
        return f"{type(self).__name__}({settings})"


class StepLR(LRScheduler):
    """``StepLR(optimizer, step_size, gamma=0.1)``: multiply the lr by ``gamma`` every
    ``step_size`` epochs.

        lr_e = lr_0 * gamma^floor(e / step_size)

    computed as PyTorch does, one step at a time: ``lr_e = lr_{e-1} * gamma`` when e is a
    multiple of step_size, else ``lr_e = lr_{e-1}``.
    """

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        self._check_settings({"step_size": step_size, "gamma": gamma})
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer)

    def _check_settings(self, settings: dict) -> None:
        step_size, gamma = settings["step_size"], settings["gamma"]
        if (isinstance(step_size, bool) or not isinstance(step_size, (int, float))
                or not float(step_size).is_integer() or step_size < 1):
            raise ValueError(f"StepLR expects step_size to be a whole number of epochs >= 1; "
                             f"got {step_size!r}")
        if (isinstance(gamma, bool) or not isinstance(gamma, (int, float))
                or not math.isfinite(gamma) or gamma <= 0):
            raise ValueError(f"StepLR expects gamma to be a finite number > 0 (the factor "
                             f"applied every step_size epochs); got {gamma!r}")

    def get_lr(self) -> float:
        lr = self.optimizer.lr
        if self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma


class CosineAnnealingLR(LRScheduler):
    """``CosineAnnealingLR(optimizer, T_max, eta_min=0)``: the lr follows half a cosine from
    lr_0 down to ``eta_min`` over ``T_max`` epochs (and back up over the next T_max, as in
    PyTorch, if you keep stepping).

        lr_e = eta_min + (lr_0 - eta_min) * (1 + cos(pi e / T_max)) / 2

    computed as PyTorch does, from the last lr: the ratio of consecutive values of
    1 + cos(pi e / T_max) scales lr - eta_min,

        lr_e = eta_min + (lr_{e-1} - eta_min) * (1 + cos(pi e / T_max))
                                              / (1 + cos(pi (e - 1) / T_max))

    except where the denominator is 0 (e - 1 = T_max, 3 T_max, ...: the lr sits at eta_min),
    where the closed form's increase is added instead:
    ``lr_e = lr_{e-1} + (lr_0 - eta_min) * (1 - cos(pi / T_max)) / 2``.
    """

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):
        self._check_settings({"T_max": T_max, "eta_min": eta_min})
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer)

    def _check_settings(self, settings: dict) -> None:
        T_max, eta_min = settings["T_max"], settings["eta_min"]
        if (isinstance(T_max, bool) or not isinstance(T_max, (int, float))
                or not float(T_max).is_integer() or T_max < 1):
            raise ValueError(f"CosineAnnealingLR expects T_max to be a whole number of epochs "
                             f">= 1; got {T_max!r}")
        if (isinstance(eta_min, bool) or not isinstance(eta_min, (int, float))
                or not math.isfinite(eta_min) or eta_min < 0):
            raise ValueError(f"CosineAnnealingLR expects eta_min to be a finite number >= 0 "
                             f"(the lowest learning rate); got {eta_min!r}")

    def get_lr(self) -> float:
        lr, e, T_max, eta_min = self.optimizer.lr, self.last_epoch, self.T_max, self.eta_min
        if (e - 1 - T_max) % (2 * T_max) == 0:  # leaving the bottom: 1 + cos(pi (e-1)/T) = 0
            return lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / T_max)) / 2
        return ((1 + math.cos(math.pi * e / T_max))
                / (1 + math.cos(math.pi * (e - 1) / T_max))
                * (lr - eta_min) + eta_min)
