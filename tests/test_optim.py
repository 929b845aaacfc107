"""Adam, AdamW and the learning-rate schedules: step for step against PyTorch, by hand where a
formula is short, through a checkpoint mid-training, and refusing what cannot work.

PyTorch is only the oracle (npnet never imports it): the tests that need it skip without it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import npnet
from npnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from npnet.lr_scheduler import CosineAnnealingLR, StepLR

RTOL, ATOL = 1e-11, 1e-13  # float64, as tests/test_torch_parity.py


def torch_or_skip():
    return pytest.importorskip("torch")


# ------------------------------------------------------------------- against PyTorch
ADAM_CASES = {
    "Adam, defaults": ("Adam", {}),
    "Adam, lr 0.05, betas (0.8, 0.99), weight_decay 0.1": (
        "Adam", dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.1)),
    "Adam, eps 1e-3 (large enough to matter)": ("Adam", dict(lr=0.01, eps=1e-3)),
    "AdamW, defaults (weight_decay 0.01)": ("AdamW", {}),
    "AdamW, lr 0.05, weight_decay 0.5": ("AdamW", dict(lr=0.05, weight_decay=0.5)),
}


def small_nets(torch, seed=0):
    """The same float64 network in npnet and in torch: Linear(5, 8) - Tanh - Linear(8, 3)."""
    npnet.manual_seed(seed)
    net = npnet.Sequential(npnet.Linear(5, 8), npnet.Tanh(),
                           npnet.Linear(8, 3)).astype(np.float64)
    net_t = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 3)).double()
    with torch.no_grad():
        for (name, param), (name_t, param_t) in zip(net.named_parameters(),
                                                    net_t.named_parameters()):
            assert name == name_t
            param_t.copy_(torch.tensor(param.data))
    return net, net_t


@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_adam_and_adamw_match_torch_step_for_step_on_a_small_net(case):
    """Ten training steps, each framework with its own forward, backward and optimizer: the
    parameters agree after every step to rounding."""
    torch = torch_or_skip()
    name, kwargs = ADAM_CASES[case]
    net, net_t = small_nets(torch)
    optimizer = getattr(npnet, name)(net.parameters(), **kwargs)
    optimizer_t = getattr(torch.optim, name)(net_t.parameters(), **kwargs)
    criterion = npnet.CrossEntropyLoss()
    rng = np.random.default_rng(1)
    for step in range(10):
        x, labels = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
        optimizer.zero_grad()
        criterion(net(x), labels)
        net.backward(criterion.backward())
        optimizer.step()
        optimizer_t.zero_grad()
        torch.nn.functional.cross_entropy(net_t(torch.tensor(x)),
                                          torch.tensor(labels)).backward()
        optimizer_t.step()
        for (label, param), param_t in zip(net.named_parameters(), net_t.parameters()):
            np.testing.assert_allclose(param.data, param_t.detach().numpy(), rtol=RTOL,
                                       atol=ATOL, err_msg=f"step {step + 1}, {label}")
    assert optimizer.step_count == 10
    for index, param_t in enumerate(net_t.parameters()):
        state_t = optimizer_t.state[param_t]
        np.testing.assert_allclose(optimizer.exp_avg[index], state_t["exp_avg"].numpy(),
                                   rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(optimizer.exp_avg_sq[index], state_t["exp_avg_sq"].numpy(),
                                   rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_adam_and_adamw_match_torch_on_raw_parameters(case):
    """A matrix and a vector parameter, gradients of the quadratic 1/2 p^T A p - b^T p
    computed in NumPy and handed to both optimizers, as test_torch_parity.py does for SGD."""
    torch = torch_or_skip()
    name, kwargs = ADAM_CASES[case]
    rng = np.random.default_rng(2)
    start = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    scales = [rng.uniform(0.5, 2.0, p.shape) for p in start]
    targets = [rng.standard_normal(p.shape) for p in start]
    params = [npnet.Parameter(p.copy()) for p in start]
    params_t = [torch.nn.Parameter(torch.tensor(p)) for p in start]
    optimizer = getattr(npnet, name)(params, **kwargs)
    optimizer_t = getattr(torch.optim, name)(params_t, **kwargs)
    for step in range(8):
        for k, (p, p_t) in enumerate(zip(params, params_t)):
            p.grad[...] = scales[k] * p.data - targets[k]
            p_t.grad = torch.tensor(scales[k] * p_t.detach().numpy() - targets[k])
        optimizer.step()
        optimizer_t.step()
        for k, (p, p_t) in enumerate(zip(params, params_t)):
            np.testing.assert_allclose(p.data, p_t.detach().numpy(), rtol=RTOL, atol=ATOL,
                                       err_msg=f"step {step + 1}, param {k}")


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_float32_parameters_stay_float32_and_match_torch_in_float32(name):
    torch = torch_or_skip()
    rng = np.random.default_rng(3)
    start = rng.standard_normal((4, 5)).astype(np.float32)
    param = npnet.Parameter(start.copy())
    param_t = torch.nn.Parameter(torch.tensor(start))
    optimizer = getattr(npnet, name)([param], lr=0.01, weight_decay=0.1)
    optimizer_t = getattr(torch.optim, name)([param_t], lr=0.01, weight_decay=0.1)
    for _ in range(5):
        grad = rng.standard_normal((4, 5)).astype(np.float32)
        param.grad[...] = grad
        param_t.grad = torch.tensor(grad)
        optimizer.step()
        optimizer_t.step()
    assert param.data.dtype == param.grad.dtype == np.float32
    assert optimizer.exp_avg[0].dtype == optimizer.exp_avg_sq[0].dtype == np.float32
    np.testing.assert_allclose(param.data, param_t.detach().numpy(), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------- by hand
def test_the_first_adam_step_moves_every_entry_by_lr_against_its_gradient():
    """At t = 1 the bias corrections undo the (1 - beta) factors exactly: m_hat = g and
    v_hat = g^2, so the step is lr * g / (|g| + eps), about lr * sign(g), whatever |g| is."""
    grad = np.array([1e-3, -2.0, 50.0, -7e-2])
    param = npnet.Parameter(np.zeros(4))
    param.grad[...] = grad
    npnet.Adam([param], lr=0.1).step()
    np.testing.assert_allclose(param.data, -0.1 * grad / (np.abs(grad) + 1e-8), rtol=1e-12)


def test_adamw_decays_the_weight_itself_while_adam_divides_the_decay_by_sqrt_v():
    """With a zero loss gradient, AdamW only shrinks p by (1 - lr * weight_decay) per step;
    Adam's L2 term lambda p becomes the whole gradient, is normalized like any gradient, and
    moves each entry by about lr, whatever its size."""
    start = np.array([10.0, -0.5, 0.2])
    adamw_param, adam_param = npnet.Parameter(start.copy()), npnet.Parameter(start.copy())
    adamw = npnet.AdamW([adamw_param], lr=0.01, weight_decay=0.1)
    adam = npnet.Adam([adam_param], lr=0.01, weight_decay=0.1)
    for _ in range(3):
        adamw.step(), adam.step()  # .grad stays zero
    np.testing.assert_allclose(adamw_param.data, start * (1 - 0.01 * 0.1) ** 3, rtol=1e-14)
    np.testing.assert_allclose(np.abs(start - adam_param.data), 0.03, rtol=1e-2)


# --------------------------------------------------------------------------- schedules
SCHEDULES = {
    "StepLR(step_size=4, gamma=0.5)": (StepLR, "StepLR", dict(step_size=4, gamma=0.5)),
    "StepLR(step_size=1, gamma=0.9)": (StepLR, "StepLR", dict(step_size=1, gamma=0.9)),
    "CosineAnnealingLR(T_max=10)": (CosineAnnealingLR, "CosineAnnealingLR",
                                    dict(T_max=10)),
    "CosineAnnealingLR(T_max=7, eta_min=0.01)": (CosineAnnealingLR, "CosineAnnealingLR",
                                                 dict(T_max=7, eta_min=0.01)),
}
OPTIMIZERS = {"SGD": dict(lr=0.3, momentum=0.9), "Adam": dict(lr=0.3),
              "AdamW": dict(lr=0.3)}


@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS))
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_schedules_give_torchs_learning_rates_for_30_epochs(schedule, optimizer_name):
    """The same numbers to the last bit (PyTorch's recursive form, computed the same way),
    past T_max where the cosine climbs again, and the optimizer uses them."""
    torch = torch_or_skip()
    ours, theirs, kwargs = SCHEDULES[schedule]
    param = npnet.Parameter(np.ones(3))
    optimizer = getattr(npnet, optimizer_name)([param], **OPTIMIZERS[optimizer_name])
    param_t = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    optimizer_t = getattr(torch.optim, optimizer_name)([param_t],
                                                       **OPTIMIZERS[optimizer_name])
    scheduler = ours(optimizer, **kwargs)
    scheduler_t = getattr(torch.optim.lr_scheduler, theirs)(optimizer_t, **kwargs)
    lrs, lrs_t = [scheduler.get_last_lr()], [scheduler_t.get_last_lr()]
    for epoch in range(30):
        param.grad[...] = 1.0
        param_t.grad = torch.ones(3, dtype=torch.float64)
        optimizer.step()
        optimizer_t.step()
        scheduler.step()
        scheduler_t.step()
        lrs.append(scheduler.get_last_lr())
        lrs_t.append(scheduler_t.get_last_lr())
        assert optimizer.lr == optimizer_t.param_groups[0]["lr"], f"epoch {epoch + 1}"
    assert lrs == lrs_t
    np.testing.assert_allclose(param.data, param_t.detach().numpy(), rtol=RTOL, atol=ATOL)


def test_the_schedules_follow_their_closed_forms():
    optimizer = npnet.SGD([npnet.Parameter(np.zeros(1))], lr=0.2)
    step = StepLR(optimizer, step_size=3, gamma=0.1)
    for epoch in range(1, 12):
        step.step()
        assert math.isclose(optimizer.lr, 0.2 * 0.1 ** (epoch // 3), rel_tol=1e-12)

    optimizer = npnet.Adam([npnet.Parameter(np.zeros(1))], lr=0.2)
    cosine = CosineAnnealingLR(optimizer, T_max=8, eta_min=0.02)
    for epoch in range(1, 25):
        cosine.step()
        expected = 0.02 + (0.2 - 0.02) * (1 + math.cos(math.pi * epoch / 8)) / 2
        assert math.isclose(optimizer.lr, expected, rel_tol=1e-12, abs_tol=1e-15), epoch
    assert cosine.get_last_lr() == [optimizer.lr]


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_a_schedule_resumed_from_its_state_continues_as_if_never_stopped(schedule):
    ours, _, kwargs = SCHEDULES[schedule]
    optimizer = npnet.SGD([npnet.Parameter(np.zeros(1))], lr=0.5)
    straight = ours(optimizer, **kwargs)
    for _ in range(12):
        straight.step()
    saved_lr, state = optimizer.lr, json.loads(json.dumps(straight.state_dict()))
    expected = []
    for _ in range(12):
        straight.step()
        expected.append(optimizer.lr)

    resumed_optimizer = npnet.SGD([npnet.Parameter(np.zeros(1))], lr=0.5)
    resumed = ours(resumed_optimizer, **kwargs)
    resumed.load_state_dict(state)
    resumed_optimizer.lr = saved_lr  # the optimizer's own state_dict carries it
    got = []
    for _ in range(12):
        resumed.step()
        got.append(resumed_optimizer.lr)
    assert got == expected


def test_schedules_refuse_settings_that_make_no_schedule():
    optimizer = npnet.SGD([npnet.Parameter(np.zeros(1))], lr=0.1)
    for bad in (0, -2, 1.5, True, "3"):
        with pytest.raises(ValueError, match=r"StepLR expects step_size to be a whole "
                                             r"number of epochs >= 1; got"):
            StepLR(optimizer, step_size=bad)
    for bad in (0, -0.5, float("nan")):
        with pytest.raises(ValueError, match=r"StepLR expects gamma to be a finite number > 0"):
            StepLR(optimizer, step_size=2, gamma=bad)
    with pytest.raises(ValueError, match=r"CosineAnnealingLR expects T_max to be a whole "
                                         r"number of epochs >= 1; got 0"):
        CosineAnnealingLR(optimizer, T_max=0)
    with pytest.raises(ValueError, match=r"CosineAnnealingLR expects eta_min to be a finite "
                                         r"number >= 0 \(the lowest learning rate\); got -1"):
        CosineAnnealingLR(optimizer, T_max=5, eta_min=-1)
    with pytest.raises(TypeError, match=r"StepLR expects an optimizer with a learning rate "
                                        r"\.lr .*; got list"):
        StepLR([npnet.Parameter(np.zeros(1))], step_size=2)
    assert optimizer.lr == 0.1  # nothing was built, nothing changed


def test_a_schedule_refuses_the_state_of_another_schedule():
    optimizer = npnet.SGD([npnet.Parameter(np.zeros(1))], lr=0.1)
    cosine_state = CosineAnnealingLR(optimizer, T_max=5).state_dict()
    step = StepLR(optimizer, step_size=2)
    before = step.state_dict()
    with pytest.raises(KeyError, match=r"StepLR.load_state_dict: the state does not fit a "
                                       r"StepLR; missing entries \['step_size', 'gamma'\], "
                                       r"unexpected entries \['T_max', 'eta_min'\]"):
        step.load_state_dict(cosine_state)
    with pytest.raises(ValueError, match=r"entry 'last_epoch' must be a whole number"):
        step.load_state_dict({**before, "last_epoch": 2.5})
    with pytest.raises(ValueError, match=r"StepLR expects step_size to be a whole number"):
        step.load_state_dict({**before, "step_size": 0})
    assert step.state_dict() == before


# ---------------------------------------------------------------- checkpoints, resume
IMAGES = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
LABELS = np.arange(8) % 4


def tiny_net(seed=0):
    npnet.manual_seed(seed)
    return npnet.Sequential(npnet.Conv2d(1, 3, kernel_size=3), npnet.BatchNorm(3, num_dims=4),
                            npnet.ReLU(), npnet.Flatten(), npnet.Linear(3 * 6 * 6, 4))


def train_steps(net, optimizer, scheduler, steps, first=0):
    """``steps`` steps of training, step s on its own batch (the same for the same s), and a
    schedule step every 2 steps."""
    criterion = npnet.CrossEntropyLoss()
    for step in range(first, first + steps):
        rows = np.random.default_rng(step).permutation(8)[:6]
        optimizer.zero_grad()
        criterion(net(IMAGES[rows]), LABELS[rows])
        net.backward(criterion.backward())
        optimizer.step()
        if step % 2 == 1:
            scheduler.step()


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_a_run_resumed_from_a_checkpoint_is_bitwise_the_uninterrupted_run(tmp_path, name):
    def fresh(seed):
        net = tiny_net(seed)
        optimizer = getattr(npnet, name)(net.parameters(), lr=0.01, weight_decay=0.05)
        return net, optimizer, CosineAnnealingLR(optimizer, T_max=4, eta_min=1e-4)

    net, optimizer, scheduler = fresh(0)
    train_steps(net, optimizer, scheduler, 8)

    first, first_optimizer, first_scheduler = fresh(0)
    train_steps(first, first_optimizer, first_scheduler, 3)  # interrupted mid-epoch
    path = save_checkpoint(tmp_path / "run.npz", first, first_optimizer,
                           extra={"scheduler": first_scheduler.state_dict()})
    resumed, resumed_optimizer, resumed_scheduler = fresh(1)  # other weights everywhere
    info = load_checkpoint(path, resumed, resumed_optimizer)
    resumed_scheduler.load_state_dict(info["extra"]["scheduler"])
    assert resumed_optimizer.step_count == 3
    train_steps(resumed, resumed_optimizer, resumed_scheduler, 5, first=3)

    for (label, expected), got in zip(net.state_dict().items(),
                                      resumed.state_dict().values()):
        np.testing.assert_array_equal(got, expected, err_msg=label)
        assert got.dtype == np.float32
    state, resumed_state = optimizer.state_dict(), resumed_optimizer.state_dict()
    assert state.keys() == resumed_state.keys()
    for key, value in state.items():
        if isinstance(value, list):
            for mine, theirs in zip(resumed_state[key], value):
                np.testing.assert_array_equal(mine, theirs, err_msg=key)
                assert mine.dtype == np.float32
        else:
            assert resumed_state[key] == value, key
    assert resumed_scheduler.state_dict() == scheduler.state_dict()


def test_an_optimizer_saved_before_its_first_step_loads_as_such(tmp_path):
    net = tiny_net()
    optimizer = npnet.Adam(net.parameters(), lr=0.02)
    path = save_checkpoint(tmp_path / "c.npz", net, optimizer)
    other = tiny_net(1)
    trained = npnet.Adam(other.parameters())
    train_steps(other, trained, StepLR(trained, step_size=1), 2)
    load_checkpoint(path, other, trained)
    assert trained.step_count == 0 and trained.lr == 0.02
    assert trained.exp_avg == [None] * 6 and trained.exp_avg_sq == [None] * 6


def test_a_learning_rate_annealed_to_zero_is_saved_and_loaded(tmp_path):
    """CosineAnnealingLR with eta_min=0 ends at lr = 0 exactly; the checkpoint of that last
    epoch must load (a constructor still refuses lr = 0: nothing would ever move)."""
    for make in (lambda ps: npnet.SGD(ps, lr=0.1, momentum=0.9), lambda ps: npnet.Adam(ps)):
        net = tiny_net()
        optimizer = make(net.parameters())
        train_steps(net, optimizer, CosineAnnealingLR(optimizer, T_max=2), 4)
        assert optimizer.lr == 0.0
        path = save_checkpoint(tmp_path / "last_epoch.npz", net, optimizer)
        fresh = make(tiny_net(1).parameters())
        load_checkpoint(path, tiny_net(1), fresh)
        assert fresh.lr == 0.0


def snapshot(optimizer):
    state = optimizer.state_dict()
    return {key: ([None if a is None else a.copy() for a in value]
                  if isinstance(value, list) else value) for key, value in state.items()}


def assert_same_state(optimizer, before):
    after = optimizer.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        if isinstance(value, list):
            for mine, theirs in zip(after[key], value):
                np.testing.assert_array_equal(mine, theirs)
        else:
            assert after[key] == value


def test_a_checkpoint_of_another_optimizer_is_refused_and_changes_nothing(tmp_path):
    net = tiny_net()
    sgd = npnet.SGD(net.parameters(), lr=0.1, momentum=0.9)
    train_steps(net, sgd, StepLR(sgd, step_size=5), 2)
    sgd_path = save_checkpoint(tmp_path / "sgd.npz", net, sgd)
    adam = npnet.Adam(net.parameters(), lr=0.01)
    train_steps(net, adam, StepLR(adam, step_size=5), 2)
    adam_path = save_checkpoint(tmp_path / "adam.npz", net, adam)

    target = tiny_net(1)
    adamw = npnet.AdamW(target.parameters())
    train_steps(target, adamw, StepLR(adamw, step_size=5), 1)
    before, model_before = snapshot(adamw), target.state_dict()
    with pytest.raises(CheckpointError, match=r"sgd\.npz: holds the state of a SGD optimizer; "
                                              r"got a AdamW"):
        load_checkpoint(sgd_path, target, adamw)
    with pytest.raises(CheckpointError, match=r"adam\.npz: holds the state of a Adam "
                                              r"optimizer; got a AdamW"):
        load_checkpoint(adam_path, target, adamw)
    assert_same_state(adamw, before)
    for name, value in target.state_dict().items():
        np.testing.assert_array_equal(value, model_before[name])


def test_an_optimizer_refuses_another_optimizers_state_dict():
    params = tiny_net().parameters()
    sgd, adam, adamw = (npnet.SGD(params, lr=0.1, momentum=0.9), npnet.Adam(params),
                        npnet.AdamW(params))
    with pytest.raises(KeyError, match=r"Adam\.load_state_dict: the state does not fit a "
                                       r"Adam \(it is an SGD's state\); missing entries "
                                       r"\['beta1',"):
        adam.load_state_dict(sgd.state_dict())
    with pytest.raises(KeyError, match=r"SGD\.load_state_dict: the state does not fit a SGD "
                                       r"\(it is an Adam's or AdamW's state\)"):
        sgd.load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match=r"AdamW\.load_state_dict: the state is an Adam's "
                                         r"\(its weight decay works differently\); load it "
                                         r"into an Adam"):
        adamw.load_state_dict(adam.state_dict())


DAMAGED_ADAM_STATES = {
    "step_count not whole": (lambda s: s.update(step_count=2.5), r"step_count must be a whole"),
    "step_count negative": (lambda s: s.update(step_count=-1), r"step_count must be a whole"),
    "an exp_avg lost": (lambda s: s["exp_avg"].__setitem__(2, None),
                        r"after 2 steps it expects 12 exp_avg and exp_avg_sq arrays .* the "
                        r"state has 11"),
    "an exp_avg of another shape": (lambda s: s["exp_avg"].__setitem__(0, np.zeros(3)),
                                    r"'exp_avg' entry 0 has shape \(3,\); parameter 0 has "
                                    r"shape \(3, 1, 3, 3\)"),
    "too few exp_avg_sq": (lambda s: s["exp_avg_sq"].pop(), r"'exp_avg_sq' must be a list "
                                                            r"with one array .* got 5 entries"),
    "a negative exp_avg_sq": (lambda s: s["exp_avg_sq"][1].__imul__(-1),
                              r"exp_avg_sq holds negative values"),
    "beta1 of 1": (lambda s: s.update(beta1=1.0), r"Adam expects betas\[0\] to be a finite "
                                                  r"number in \[0, 1\); got 1.0"),
    "eps of 0": (lambda s: s.update(eps=0.0), r"Adam expects eps to be a finite number > 0"),
}


@pytest.mark.parametrize("damage", list(DAMAGED_ADAM_STATES))
def test_adam_refuses_a_damaged_state_and_changes_nothing(damage):
    change, message = DAMAGED_ADAM_STATES[damage]
    net = tiny_net()
    source = npnet.Adam(net.parameters())
    train_steps(net, source, StepLR(source, step_size=5), 2)
    state = snapshot(source)
    change(state)
    target_net = tiny_net(1)
    target = npnet.Adam(target_net.parameters(), lr=0.5)
    train_steps(target_net, target, StepLR(target, step_size=5), 1)  # a state of its own
    before = snapshot(target)
    with pytest.raises((ValueError, TypeError), match=message):
        target.load_state_dict(state)
    assert_same_state(target, before)


def test_a_damaged_step_count_in_a_checkpoint_is_refused_and_changes_nothing(tmp_path):
    net = tiny_net()
    optimizer = npnet.Adam(net.parameters())
    train_steps(net, optimizer, StepLR(optimizer, step_size=5), 2)
    path = save_checkpoint(tmp_path / "run.npz", net, optimizer)
    with np.load(path, allow_pickle=False) as archive:
        entries = {name: archive[name] for name in archive.files}
    metadata = json.loads(str(entries["metadata"]))
    metadata["optimizer"]["settings"]["step_count"] = 1.5
    entries["metadata"] = np.array(json.dumps(metadata))
    np.savez(path, **entries)

    target = tiny_net(1)
    fresh = npnet.Adam(target.parameters(), lr=0.3)
    before, model_before = snapshot(fresh), target.state_dict()
    with pytest.raises(CheckpointError, match=r"run\.npz: could not be loaded .*step_count "
                                              r"must be a whole number >= 0; got 1\.5"):
        load_checkpoint(path, target, fresh)
    assert_same_state(fresh, before)
    for name, value in target.state_dict().items():
        np.testing.assert_array_equal(value, model_before[name])


# ---------------------------------------------------------------- bad hyperparameters
BAD_ADAM_ARGUMENTS = {
    "lr=0": (dict(lr=0.0), ValueError, r"lr to be a finite number > 0; got 0\.0"),
    "lr=-1": (dict(lr=-1), ValueError, r"lr to be a finite number > 0; got -1"),
    "lr=nan": (dict(lr=float("nan")), ValueError, r"lr to be a finite number > 0; got nan"),
    "lr='fast'": (dict(lr="fast"), TypeError, r"lr to be a finite number > 0; got 'fast'"),
    "betas=(1.0, 0.999)": (dict(betas=(1.0, 0.999)), ValueError,
                           r"betas\[0\] to be a finite number in \[0, 1\); got 1\.0"),
    "betas=(0.9, -0.1)": (dict(betas=(0.9, -0.1)), ValueError,
                          r"betas\[1\] to be a finite number in \[0, 1\); got -0\.1"),
    "betas=0.9": (dict(betas=0.9), TypeError, r"betas to be a pair \(beta1, beta2\)"),
    "betas=(0.9,)": (dict(betas=(0.9,)), TypeError, r"betas to be a pair \(beta1, beta2\)"),
    "eps=0": (dict(eps=0.0), ValueError, r"eps to be a finite number > 0 \(with eps = 0 a "
                                         r"gradient of exactly 0 gives the update 0 / 0\)"),
    "eps=inf": (dict(eps=float("inf")), ValueError, r"eps to be a finite number > 0"),
    "weight_decay=-0.1": (dict(weight_decay=-0.1), ValueError,
                          r"weight_decay to be a finite number >= 0; got -0\.1"),
    "weight_decay=nan": (dict(weight_decay=float("nan")), ValueError,
                         r"weight_decay to be a finite number >= 0; got nan"),
}


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("case", list(BAD_ADAM_ARGUMENTS))
def test_adam_and_adamw_refuse_bad_hyperparameters_naming_the_class(name, case):
    kwargs, error, message = BAD_ADAM_ARGUMENTS[case]
    with pytest.raises(error, match=rf"^{name} expects {message}"):
        getattr(npnet, name)(tiny_net().parameters(), **kwargs)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_and_adamw_refuse_what_sgd_refuses_in_the_parameter_list(name):
    param = npnet.Parameter(np.zeros(3))
    make = getattr(npnet, name)
    with pytest.raises(ValueError, match=rf"{name} got the same Parameter\(shape=\(3,\), "
                                         rf"dtype=float64\) twice \(items 0 and 2\)"):
        make([param, npnet.Parameter(np.zeros(2)), param])
    with pytest.raises(TypeError, match=rf"{name} expects Parameter objects "
                                        rf"\(model.parameters\(\)\); item 1 is ndarray"):
        make([param, np.zeros(2)])
    with pytest.raises(ValueError, match=rf"{name} got an empty parameter list"):
        make([])


def test_the_defaults_are_torchs():
    params = tiny_net().parameters()
    adam, adamw = npnet.Adam(params), npnet.AdamW(params)
    assert (adam.lr, adam.betas, adam.eps, adam.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 0)
    assert (adamw.lr, adamw.betas, adamw.eps, adamw.weight_decay) == (1e-3, (0.9, 0.999),
                                                                      1e-8, 1e-2)
    assert repr(adamw) == "AdamW(lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01)"
