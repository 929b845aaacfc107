"""Instruments: watch what every layer outputs and what gradient it sends back, as training runs.

A ``Recorder`` hangs a forward hook and a backward hook on each layer of a network (the hook
API of ``Module``; nothing in the layers is changed) and, every ``every`` training steps,
writes down a few numbers per layer:

    activation statistics, from the layer's output y (any shape), over all its entries:
        mean       = mean(y)
        std        = std(y)                    (population: divides by y.size)
        saturated  = fraction of entries where the activation's derivative is ~0:
                       Sigmoid: y < 0.01 or y > 0.99   (|x| > ln 99 = 4.6; y(1-y) < 0.0099,
                                                        under 4% of its peak 0.25)
                       Tanh:    |y| > 0.98             (the same |x| > 2.3 in tanh's scale;
                                                        1 - y^2 < 0.04, under 4% of its peak 1)
                       ReLU:    y == 0                 (derivative exactly 0)
                     NaN for every other layer type.
    gradient statistics, from the layer's backward:
        grad_in_norm      = ||dL/dx||, the Euclidean norm of the gradient the layer sends to its
                            input (NaN for a layer whose backward skips it)
        grad_norm.<name>  = ||param.grad|| for each of its parameters, e.g. grad_norm.weight,
                            grad_norm.gamma. The backward hook runs right after the layer's own
                            backward, so .grad is filled; it is the accumulated gradient, i.e.
                            this step's when zero_grad() was called before the backward.

What a "step" is: one forward pass of the network in training mode. The recorder counts them
(step 0 is the first) and records at steps 0, every, 2 every, ... Forward passes in evaluation
mode (``net.eval()``, e.g. measuring test accuracy) are neither counted nor recorded.

Cost: when a step is not recorded, each hook returns after a comparison. A recorded step
costs a handful of vectorized reductions per layer; ``measure_overhead`` measures what that
adds to training (README.md, "Look inside", gives the figure), and ``Recorder.seconds`` is
the time spent in the hooks.

    rec = Recorder(net, every=10, sample_size=2000)   # also keep 2,000 activation values
    ... train ...                                     # per layer at each recorded step
    rec.remove()                                      # detach the hooks
    rec.history[0]["2"]["saturated"]                  # step 0, layer "2" (a Sigmoid)
    arrays = rec.to_arrays()                          # arrays["std"]: (steps, layers)

``plots_inside.py`` draws the results.
"""

from __future__ import annotations

import time

import numpy as np

from .activation import ReLU, Sigmoid, Tanh
from .loss import CrossEntropyLoss
from .module import Module
from .optim import SGD


def saturated_fraction(layer: Module, y: np.ndarray) -> float:
    """The fraction of entries of ``layer``'s output y where its derivative is ~0 (NaN if the
    layer is not an activation with a rule below)."""
    if isinstance(layer, Sigmoid):
        saturated = (y < 0.01) | (y > 0.99)
    elif isinstance(layer, Tanh):
        saturated = (y < -0.98) | (y > 0.98)
    elif isinstance(layer, ReLU):
        saturated = y == 0
    else:
        return float("nan")
    return np.count_nonzero(saturated) / y.size


def activation_stats(layer: Module, y: np.ndarray) -> dict:
    """{'mean', 'std', 'saturated'} of one output y, as floats."""
    return {"mean": float(y.mean()), "std": float(y.std()),
            "saturated": float(saturated_fraction(layer, y))}


def gradient_stats(layer: Module, grad_in: np.ndarray | None) -> dict:
    """{'grad_in_norm', 'grad_norm.<param>' ...}: Euclidean norms, as floats."""
    stats = {"grad_in_norm": float("nan") if grad_in is None else float(np.linalg.norm(grad_in))}
    for name, param in layer.named_parameters():
        stats[f"grad_norm.{name}"] = float(np.linalg.norm(param.grad))
    return stats


class Recorder:
    """``Recorder(net, every=10, layers=None, sample_size=0, seed=0)``.

    - net: the network to watch (its layers get hooks; the network itself is not changed)
    - every: record at steps 0, every, 2 every, ... (a step is a training-mode forward pass)
    - layers: which layers to watch: None for every layer (every module without children), or
      a list whose items are dotted names from ``net.named_modules()`` (``'2'``, ``'1.0'``) or
      layer types (``npnet.Sigmoid``)
    - sample_size: also keep this many randomly chosen entries of each output at each
      recorded step, in ``samples`` (for histograms); 0 keeps none
    - seed: of the random choice of those entries

    After training:
    - ``history[step][layer_name][stat]``: a float (stats in this module's docstring)
    - ``samples[step][layer_name]``: a float32 array (sample_size,)
    - ``to_arrays()``: the history as arrays (steps, layers); columns in the order of ``names``
    - ``names``: the watched layers' dotted names, in forward order; ``watched[name]`` is the
      layer and ``labels[name]`` its label for plots, e.g. ``'2 Sigmoid()'``
    - ``remove()``: detach every hook (also on leaving a ``with Recorder(...) as rec:`` block)
    """

    def __init__(self, net: Module, every: int = 10, layers=None, sample_size: int = 0,
                 seed: int = 0):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"Recorder expects every to be a positive integer; got {every!r}")
        self.net = net
        self.every = int(every)
        self.sample_size = int(sample_size)
        self.rng = np.random.default_rng(seed)
        self.step = -1  # the current step; the first training forward makes it 0
        self.seconds = 0.0  # time spent inside the hooks: the recorder's own cost
        self.recording = False  # whether the current step is recorded
        self.history: dict[int, dict[str, dict[str, float]]] = {}
        self.samples: dict[int, dict[str, np.ndarray]] = {}
        watched = _select_layers(net, layers)
        self.names = [name for name, _ in watched]
        self.watched = dict(watched)  # name -> layer
        self.labels = {name: f"{name} {layer.short_name()}" for name, layer in watched}
        self.handles = []
        for name, layer in watched:
            self.handles.append(layer.register_forward_hook(self._forward_hook(name)))
            self.handles.append(layer.register_backward_hook(self._backward_hook(name)))

    def __repr__(self) -> str:
        return (f"Recorder({len(self.names)} layers, every={self.every}, "
                f"{len(self.history)} steps recorded)")

    # --------------------------------------------------------------------- the hooks
    def _forward_hook(self, name: str):
        first = name == self.names[0]

        def hook(layer, x, y):
            start = time.perf_counter()
            if not layer.training:
                return
            if first:  # the first watched layer opens a new step
                self.step += 1
                self.recording = self.step % self.every == 0
            if self.recording:
                self.history.setdefault(self.step, {}).setdefault(name, {}).update(
                    activation_stats(layer, y))
                if self.sample_size:
                    # entries drawn with replacement; unravel_index, not reshape(-1), which
                    # would copy all of y when it is a strided view
                    entries = self.rng.integers(0, y.size, self.sample_size)
                    self.samples.setdefault(self.step, {})[name] = \
                        y[np.unravel_index(entries, y.shape)].astype(np.float32)
            self.seconds += time.perf_counter() - start
        return hook

    def _backward_hook(self, name: str):
        def hook(layer, grad_out, grad_in):
            start = time.perf_counter()
            if self.recording:
                self.history.setdefault(self.step, {}).setdefault(name, {}).update(
                    gradient_stats(layer, grad_in))
            self.seconds += time.perf_counter() - start
        return hook

    # ----------------------------------------------------------------- the results
    def remove(self) -> None:
        """Detach every hook; the history stays."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.recording = False

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    @property
    def steps(self) -> list[int]:
        """The recorded steps, in order."""
        return sorted(self.history)

    def stat_names(self) -> list[str]:
        """Every statistic recorded for at least one layer, activation stats first."""
        names = {stat for step in self.history.values() for stats in step.values()
                 for stat in stats}
        first = ["mean", "std", "saturated", "grad_in_norm"]
        return [s for s in first if s in names] + sorted(names - set(first))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """{'steps': (T,), stat: (T, L) ...} for T recorded steps and L = len(names) layers;
        NaN where a layer has no such statistic (e.g. grad_norm.weight of a Sigmoid)."""
        steps = self.steps
        arrays = {"steps": np.array(steps, dtype=np.int64)}
        for stat in self.stat_names():
            table = np.full((len(steps), len(self.names)), np.nan)
            for t, step in enumerate(steps):
                for column, name in enumerate(self.names):
                    table[t, column] = self.history[step].get(name, {}).get(stat, np.nan)
            arrays[stat] = table
        return arrays

    def samples_near(self, step: int) -> tuple[int, dict[str, np.ndarray]]:
        """(the sampled step closest to ``step``, its samples by layer name)."""
        if not self.samples:
            raise ValueError("this Recorder kept no activation samples; create it with "
                             "sample_size > 0, e.g. Recorder(net, sample_size=2000)")
        nearest = min(self.samples, key=lambda s: (abs(s - step), s))
        return nearest, self.samples[nearest]


def _select_layers(net: Module, layers) -> list[tuple[str, Module]]:
    """(dotted name, layer) of the layers to watch, in the order of ``net.named_modules()``
    (the forward order for a Sequential)."""
    leaves = [(name, module) for name, module in net.named_modules()
              if not any(True for _ in module.children())]
    if layers is None:
        chosen = leaves
    else:
        wanted = [layers] if isinstance(layers, (str, type)) else list(layers)
        names = {item for item in wanted if isinstance(item, str)}
        types = tuple(item for item in wanted if isinstance(item, type))
        every_module = list(net.named_modules())
        unknown = names - {name for name, _ in every_module}
        if unknown:
            raise ValueError(f"Recorder: no layer named {sorted(unknown)} in the network; "
                             f"names are {[name for name, _ in every_module]}")
        chosen = [(name, module) for name, module in every_module
                  if name in names or (types and isinstance(module, types))]
    if not chosen:
        raise ValueError(f"Recorder: no layers to watch (layers={layers!r})")
    return [(name or type(module).__name__, module) for name, module in chosen]


def measure_overhead(net: Module, x: np.ndarray, labels: np.ndarray, every: int = 10,
                     steps: int = 20, sample_size: int = 0, lr: float = 0.1) -> dict:
    """What a Recorder costs per training step of ``net`` on the batch (x, labels).

    Trains ``steps`` steps (rounded to whole cycles of ``every``) twice, with a Recorder
    recording every step and one recording every ``every`` steps, and returns seconds per step:
    {'step': a whole training step, median of the runs, 'hooks_every_step': time inside the
    hooks with every=1, 'hooks_sampled': with every=every}. Timing the hooks themselves
    (``Recorder.seconds``) keeps the answer steady on a busy machine, where the step time
    wobbles by more than the hooks cost. The network's state is restored afterwards.
    """
    steps = max(every, steps // every * every)
    state, training = net.state_dict(), net.training
    criterion, optimizer = CrossEntropyLoss(), SGD(net.parameters(), lr=lr)
    net.train()
    step_times, hook_seconds = [], {}
    try:
        for key, recorder_every in (("hooks_every_step", 1), ("hooks_sampled", every)):
            with Recorder(net, every=recorder_every, sample_size=sample_size) as recorder:
                for _ in range(steps):
                    start = time.perf_counter()
                    optimizer.zero_grad()
                    criterion(net(x), labels)
                    net.backward(criterion.backward())
                    optimizer.step()
                    step_times.append(time.perf_counter() - start)
            hook_seconds[key] = recorder.seconds / steps
        return {"step": float(np.median(step_times)), **hook_seconds}
    finally:
        net.load_state_dict(state)
        net.zero_grad()
        net.train(training)
