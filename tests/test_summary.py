"""``net.summary``: shapes, parameter counts and MACs against numbers worked out by hand.

The expected values are written out from the formulas, layer by layer, not computed by the
code under test:

    Conv2d(C -> O, k x k), output (N, O, Ho, Wo):  params O*C*k*k + O,  MACs N*O*Ho*Wo*C*k*k
    Linear(in -> out):                             params in*out + out,  MACs N*in*out
    BatchNorm(F):                                  params 2*F (gamma and beta), no MACs
    Sigmoid, AvgPool2d, Flatten:                   no params, no MACs
"""

import numpy as np

import npnet
from npnet.models import lenet, lenet_224

# The book's LeNet-BN on 1x28x28: 28 -conv5-> 24 -pool2-> 12 -conv5-> 8 -pool2-> 4
LENET_BN_28 = [
    # name, output shape, params, MACs
    ("Conv2d", (1, 6, 24, 24), 6 * 1 * 5 * 5 + 6, 1 * 6 * 24 * 24 * 1 * 5 * 5),
    ("BatchNorm", (1, 6, 24, 24), 2 * 6, 0),
    ("Sigmoid", (1, 6, 24, 24), 0, 0),
    ("AvgPool2d", (1, 6, 12, 12), 0, 0),
    ("Conv2d", (1, 16, 8, 8), 16 * 6 * 5 * 5 + 16, 1 * 16 * 8 * 8 * 6 * 5 * 5),
    ("BatchNorm", (1, 16, 8, 8), 2 * 16, 0),
    ("Sigmoid", (1, 16, 8, 8), 0, 0),
    ("AvgPool2d", (1, 16, 4, 4), 0, 0),
    ("Flatten", (1, 256), 0, 0),
    ("Linear", (1, 120), 256 * 120 + 120, 1 * 256 * 120),
    ("BatchNorm", (1, 120), 2 * 120, 0),
    ("Sigmoid", (1, 120), 0, 0),
    ("Linear", (1, 84), 120 * 84 + 84, 1 * 120 * 84),
    ("BatchNorm", (1, 84), 2 * 84, 0),
    ("Sigmoid", (1, 84), 0, 0),
    ("Linear", (1, 10), 84 * 10 + 10, 1 * 84 * 10),
]

# The seed's variant on 1x224x224: 224 -conv5-> 220 -pool2-> 110 -conv5-> 106 -pool5-> 21,
# and 16 * 21 * 21 = 7056 features (the seed notebook's printed trace has the same shapes)
LENET_224 = [
    ("Conv2d", (1, 6, 220, 220), 6 * 1 * 5 * 5 + 6, 1 * 6 * 220 * 220 * 1 * 5 * 5),
    ("BatchNorm", (1, 6, 220, 220), 12, 0),
    ("Sigmoid", (1, 6, 220, 220), 0, 0),
    ("AvgPool2d", (1, 6, 110, 110), 0, 0),
    ("Conv2d", (1, 16, 106, 106), 16 * 6 * 5 * 5 + 16, 1 * 16 * 106 * 106 * 6 * 5 * 5),
    ("BatchNorm", (1, 16, 106, 106), 32, 0),
    ("Sigmoid", (1, 16, 106, 106), 0, 0),
    ("AvgPool2d", (1, 16, 21, 21), 0, 0),
    ("Flatten", (1, 7056), 0, 0),
    ("Linear", (1, 120), 7056 * 120 + 120, 7056 * 120),
    ("BatchNorm", (1, 120), 240, 0),
    ("Sigmoid", (1, 120), 0, 0),
    ("Linear", (1, 84), 120 * 84 + 84, 120 * 84),
    ("BatchNorm", (1, 84), 168, 0),
    ("Sigmoid", (1, 84), 0, 0),
    ("Linear", (1, 10), 84 * 10 + 10, 84 * 10),
]


def check_rows(result, expected):
    assert len(result.rows) == len(expected)
    for position, (row, (kind, shape, params, macs)) in enumerate(zip(result.rows, expected)):
        assert row.name == str(position)
        assert row.layer.startswith(kind), (row.layer, kind)
        assert row.output_shape == shape, row
        assert row.params == params, row
        assert row.macs == macs, row
        assert row.flops == 2 * macs


def test_lenet_bn_28():
    result = lenet().summary((1, 28, 28))
    check_rows(result, LENET_BN_28)
    # 156 + 12 + 2416 + 32 + 30840 + 240 + 10164 + 168 + 850
    assert result.total_params == 44_878
    # 86400 + 153600 + 30720 + 10080 + 840
    assert result.total_macs == 281_640
    assert result.total_flops == 563_280


def test_lenet_224_matches_the_seed():
    result = lenet_224().summary((1, 224, 224))
    check_rows(result, LENET_224)
    assert result.total_params == 860_878
    # 7,260,000 + 26,966,400 + 846,720 + 10,080 + 840
    assert result.total_macs == 35_084_040


def test_totals_equal_the_network_own_parameter_count():
    net = lenet()
    assert lenet().summary((1, 28, 28)).total_params == sum(p.data.size for p in net.parameters())


def test_batch_size_scales_macs_not_params():
    one, eight = lenet().summary((1, 28, 28)), lenet().summary((1, 28, 28), batch_size=8)
    assert eight.total_macs == 8 * one.total_macs
    assert eight.total_params == one.total_params
    assert eight.rows[0].output_shape == (8, 6, 24, 24)


def test_table_is_printable_with_totals():
    text = str(lenet().summary((1, 28, 28)))
    assert "Conv2d(1, 6, kernel_size=5)" in text
    assert "(1, 6, 24, 24)" in text
    assert "44,878" in text and "281,640" in text and "563,280" in text
    assert repr(lenet().summary((1, 28, 28))) == text


def test_summary_changes_nothing():
    """Mode, moving averages, parameters and hooks are as before; hooks do not fire."""
    npnet.manual_seed(0)
    net = lenet()
    x = np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32)
    net(x)  # training mode: moving averages move away from their initial values
    net[3].eval()  # a mixed mode, to be kept as it is
    before = net.state_dict()
    modes = [m.training for m in net.modules()]
    calls = []
    handle = net[0].register_forward_hook(lambda *args: calls.append(args))
    net.summary((1, 28, 28))
    handle.remove()
    assert calls == []
    assert [m.training for m in net.modules()] == modes
    after = net.state_dict()
    assert all(np.array_equal(before[key], after[key]) for key in before)


def test_nested_sequential_and_bad_input_shape():
    net = npnet.Sequential(npnet.Sequential(npnet.Conv2d(1, 2, 3), npnet.ReLU()),
                           npnet.Flatten(), npnet.Linear(2 * 4 * 4, 3))
    result = net.summary((1, 6, 6))
    assert [row.name for row in result.rows] == ["0.0", "0.1", "1", "2"]
    assert result.rows[0].macs == 1 * 2 * 4 * 4 * 1 * 3 * 3
    assert result.rows[3].macs == 32 * 3
    try:
        net.summary((1, 7, 7))  # 5x5 after the conv: Linear(32, 3) gets 50 features
    except ValueError as error:
        assert "Linear(32, 3)" in str(error) and "(1, 50)" in str(error)
    else:
        raise AssertionError("a wrong input shape should raise")
