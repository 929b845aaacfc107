"""npnet's residual and dense blocks, and the small ResNet and DenseNet, against PyTorch.

``mirror`` builds, for any npnet network of the layers below, the same network in torch with
the same parameters and BatchNorm state (BatchNorm is the seed's own class, as in
test_torch_parity.py: its moving variance is the biased one, unlike torch's BatchNorm2d).
Both run forward and backward in float64 with the cross-entropy loss, and the logits, dL/dx,
every parameter gradient and every moving statistic are compared at test_torch_parity.py's
tolerances. torch's autograd adds the gradients of a tensor used twice and splits those of a
``torch.cat`` by itself: these tests check that npnet's explicit sums and splits do the same.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import npnet  # noqa: E402
from npnet.models import dense_block, densenet, residual_block, resnet  # noqa: E402

from conftest import nontrivial  # noqa: E402
from test_torch_parity import ATOL, RTOL, BatchNorm, N, T, assert_parity  # noqa: E402


class TorchResidual(nn.Module):
    def __init__(self, body, shortcut):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


class TorchConcat(nn.Module):
    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def mirror(module: npnet.Module, params: dict, buffers: list, prefix: str = ""):
    """The torch twin of ``module``; fills params {npnet name: torch parameter} and buffers
    [(npnet name, npnet layer, torch layer)]."""
    def name(part):
        return f"{prefix}.{part}" if prefix else part

    if isinstance(module, npnet.Sequential):
        return nn.Sequential(*[mirror(layer, params, buffers, name(str(position)))
                               for position, layer in enumerate(module)])
    if isinstance(module, npnet.Residual):
        shortcut = None if module.shortcut is None else \
            mirror(module.shortcut, params, buffers, name("shortcut"))
        return TorchResidual(mirror(module.body, params, buffers, name("body")), shortcut)
    if isinstance(module, npnet.Concat):
        return TorchConcat([mirror(branch, params, buffers, name(str(position)))
                            for position, branch in enumerate(module.branches)])
    if isinstance(module, npnet.Conv2d):
        twin = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                         module.stride, module.padding, bias=module.bias is not None)
    elif isinstance(module, npnet.Linear):
        twin = nn.Linear(module.in_features, module.out_features)
    elif isinstance(module, npnet.BatchNorm):
        twin = BatchNorm(module.num_features, num_dims=module.num_dims)
        buffers.append((prefix, module, twin))
    else:
        twin = {npnet.ReLU: nn.ReLU, npnet.Identity: nn.Identity, npnet.Flatten: nn.Flatten}.get(
            type(module))
        if twin is not None:
            return twin()
        if isinstance(module, npnet.AdaptiveAvgPool2d):
            return nn.AdaptiveAvgPool2d(module.output_size)
        if isinstance(module, npnet.AvgPool2d):
            return nn.AvgPool2d(module.kernel_size, module.stride)
        raise TypeError(f"no torch twin for {module!r}")
    twin = twin.double()
    for part, param in module.named_parameters():
        with torch.no_grad():
            getattr(twin, part).copy_(T(param.data))
        params[name(part)] = getattr(twin, part)
    if isinstance(module, npnet.BatchNorm):
        twin.moving_mean, twin.moving_var = T(module.moving_mean), T(module.moving_var)
    return twin


def case(make, shape, training: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    npnet.manual_seed(seed)
    net = nontrivial(make(), rng).astype(np.float64).train(training)
    params, buffers = {}, []
    torch_net = mirror(net, params, buffers).train(training)
    x = rng.standard_normal(shape)
    logits = net(x)
    labels = rng.integers(0, logits.shape[1], shape[0])
    criterion = npnet.CrossEntropyLoss()
    loss = criterion(logits, labels)
    net.zero_grad()
    grad_x = net.backward(criterion.backward())

    x_t = T(x, requires_grad=True)
    logits_t = torch_net(x_t)
    loss_t = nn.functional.cross_entropy(logits_t, torch.tensor(labels))
    loss_t.backward()
    triples = [("logits", logits, N(logits_t)), ("loss", np.array(loss), N(loss_t)),
               ("dL/dx", grad_x, N(x_t.grad))]
    assert set(params) == {name for name, _ in net.named_parameters()}
    triples += [(f"dL/d{name}", param.grad, N(params[name].grad))
                for name, param in net.named_parameters()]
    for name, layer, twin in buffers:
        triples += [(f"{name}.moving_mean", layer.moving_mean, N(twin.moving_mean)),
                    (f"{name}.moving_var", layer.moving_var, N(twin.moving_var))]
    return triples


def with_head(block, outputs):
    return npnet.Sequential(block, npnet.Flatten(), npnet.Linear(outputs, 5))


CASES = {
    "residual block, identity shortcut": (lambda: with_head(residual_block(3, 3), 75),
                                          (4, 3, 5, 5)),
    "residual block, 1x1 stride-2 shortcut": (
        lambda: with_head(residual_block(3, 4, use_1x1conv=True, stride=2), 36), (4, 3, 6, 6)),
    "dense block": (lambda: with_head(dense_block(2, 3, growth_rate=2), 175), (4, 3, 5, 5)),
    "resnet": (lambda: resnet(channels=(4, 6, 8)), (4, 1, 12, 12)),
    "densenet": (lambda: densenet(stem_channels=4, growth_rate=3, convs_per_block=(2, 2)),
                 (4, 1, 12, 12)),
}


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("name", CASES)
def test_blocks_and_networks_match_pytorch(name, training):
    triples = case(*CASES[name], training=training)
    assert len(triples) > 10
    assert_parity(triples, rtol=RTOL, atol=ATOL)


def test_the_comparison_catches_a_residual_that_drops_the_shortcut_gradient(monkeypatch):
    def backward(self, grad_out):
        grad_out = self.check_grad(grad_out, self.require_cache())
        return self.body.run_backward(grad_out)  # the identity path's grad_out forgotten
    monkeypatch.setattr(npnet.Residual, "backward", backward)
    triples = case(*CASES["residual block, identity shortcut"], training=True)
    with pytest.raises(AssertionError, match="dL/dx"):
        assert_parity(triples, rtol=RTOL, atol=ATOL)
