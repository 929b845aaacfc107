"""The networks of the seed chapter, built from npnet layers.

- ``lenet(batch_norm=True)``: the book's LeNet with batch normalization for 28x28 images
  (d2l 7.5): two Conv2d(5) + BatchNorm + Sigmoid + AvgPool2d(2, 2) stages, then three Linear
  layers, the first two followed by BatchNorm + Sigmoid. 1x28x28 -> 10 logits.
- ``lenet(batch_norm=False)``: the book's original sigmoid LeNet (d2l 6.6), whose first
  convolution pads by 2 so the 28x28 input keeps its size.
- ``lenet_224()``: the seed notebook's variant for 224x224 input (AvgPool2d(5) in the second
  stage, Linear(7056, 120)), whose shape trace examples/shape_trace.py prints.

And the next two chapters, scaled down for 28x28 images on a CPU:

- ``resnet()``: d2l 7.6's ResNet layout (a stem, stages of residual blocks that halve the size
  and double the channels, global average pooling, one Linear) with 3 stages of 16/32/64
  channels and one block each: 8 layers with weights, a ResNet-8.
- ``densenet()``: d2l 7.7's DenseNet layout (a stem, dense blocks whose layers each add
  ``growth_rate`` channels, transition blocks that halve channels and size, global average
  pooling, one Linear) with 3 dense blocks of 2 layers.
"""

from __future__ import annotations

from .activation import ReLU, Sigmoid
from .batchnorm import BatchNorm
from .concat import Concat
from .container import Sequential
from .conv import Conv2d
from .flatten import Flatten
from .identity import Identity
from .linear import Linear
from .pool import AdaptiveAvgPool2d, AvgPool2d
from .residual import Residual


def lenet(batch_norm: bool = True, num_classes: int = 10) -> Sequential:
    """LeNet for (N, 1, 28, 28) images -> (N, num_classes) logits."""
    if not batch_norm:
        return Sequential(
            Conv2d(1, 6, kernel_size=5, padding=2), Sigmoid(),
            AvgPool2d(kernel_size=2, stride=2),
            Conv2d(6, 16, kernel_size=5), Sigmoid(),
            AvgPool2d(kernel_size=2, stride=2), Flatten(),
            Linear(16 * 5 * 5, 120), Sigmoid(),
            Linear(120, 84), Sigmoid(),
            Linear(84, num_classes),
        )
    return Sequential(
        Conv2d(1, 6, kernel_size=5), BatchNorm(6, num_dims=4), Sigmoid(),
        AvgPool2d(kernel_size=2, stride=2),
        Conv2d(6, 16, kernel_size=5), BatchNorm(16, num_dims=4), Sigmoid(),
        AvgPool2d(kernel_size=2, stride=2), Flatten(),
        Linear(16 * 4 * 4, 120), BatchNorm(120, num_dims=2), Sigmoid(),
        Linear(120, 84), BatchNorm(84, num_dims=2), Sigmoid(),
        Linear(84, num_classes),
    )


def lenet_224(num_classes: int = 10) -> Sequential:
    """The seed's LeNet-BN for (N, 1, 224, 224) images, layer for layer."""
    return Sequential(
        Conv2d(1, 6, kernel_size=5), BatchNorm(6, num_dims=4), Sigmoid(),
        AvgPool2d(kernel_size=2, stride=2),
        Conv2d(6, 16, kernel_size=5), BatchNorm(16, num_dims=4), Sigmoid(),
        AvgPool2d(kernel_size=5), Flatten(),
        Linear(7056, 120), BatchNorm(120, num_dims=2), Sigmoid(),
        Linear(120, 84), BatchNorm(84, num_dims=2), Sigmoid(),
        Linear(84, num_classes),
    )


# ------------------------------------------------------------------------- ResNet (d2l 7.6)
def residual_block(in_channels: int, out_channels: int, use_1x1conv: bool = False,
                   stride: int = 1) -> Sequential:
    """d2l's residual block: ReLU(body(x) + shortcut(x)), (N, in, H, W) -> (N, out, H/s, W/s).

    body: Conv2d(3x3, stride) -> BatchNorm -> ReLU -> Conv2d(3x3) -> BatchNorm;
    shortcut: x itself, or (``use_1x1conv``, needed when the channels or the size change) a
    1x1 Conv2d with the same stride followed by BatchNorm (as torchvision's ResNet; d2l's
    shortcut has no BatchNorm).
    """
    body = Sequential(
        Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
        BatchNorm(out_channels, num_dims=4), ReLU(),
        Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
        BatchNorm(out_channels, num_dims=4),
    )
    shortcut = None
    if use_1x1conv:
        shortcut = Sequential(Conv2d(in_channels, out_channels, kernel_size=1, stride=stride),
                              BatchNorm(out_channels, num_dims=4))
    return Sequential(Residual(body, shortcut), ReLU())


def resnet(channels: tuple = (16, 32, 64), blocks_per_stage: int = 1, in_channels: int = 1,
           num_classes: int = 10) -> Sequential:
    """A small ResNet for (N, in_channels, 28, 28) images -> (N, num_classes) logits.

    stem:    Conv2d(in_channels, channels[0], 3, padding=1) -> BatchNorm -> ReLU  (28x28)
    stage k: ``blocks_per_stage`` residual blocks of channels[k]; every stage after the first
             starts with a stride-2 block with a 1x1 shortcut (28 -> 14 -> 7)
    head:    AdaptiveAvgPool2d(1) -> Flatten -> Linear(channels[-1], num_classes)

    d2l's ResNet-18 is the same plan for 96x96 images: a 7x7 stride-2 stem with max pooling,
    four stages of 64..512 channels and two blocks each.
    """
    layers = [Conv2d(in_channels, channels[0], kernel_size=3, padding=1),
              BatchNorm(channels[0], num_dims=4), ReLU()]
    previous = channels[0]
    for stage, width in enumerate(channels):
        for block in range(blocks_per_stage):
            first_of_later_stage = stage > 0 and block == 0
            layers.append(residual_block(previous, width, use_1x1conv=first_of_later_stage,
                                         stride=2 if first_of_later_stage else 1))
            previous = width
    layers += [AdaptiveAvgPool2d(1), Flatten(), Linear(previous, num_classes)]
    return Sequential(*layers)


# ----------------------------------------------------------------------- DenseNet (d2l 7.7)
def conv_block(in_channels: int, out_channels: int) -> Sequential:
    """d2l's DenseNet layer: BatchNorm -> ReLU -> Conv2d(3x3, padding=1), sizes kept."""
    return Sequential(BatchNorm(in_channels, num_dims=4), ReLU(),
                      Conv2d(in_channels, out_channels, kernel_size=3, padding=1))


def dense_block(num_convs: int, in_channels: int, growth_rate: int) -> Sequential:
    """``num_convs`` layers, each joining its input and its conv_block's output on channels:
    (N, in, H, W) -> (N, in + num_convs * growth_rate, H, W)."""
    return Sequential(*[
        Concat(Identity(), conv_block(in_channels + position * growth_rate, growth_rate))
        for position in range(num_convs)])


def transition_block(in_channels: int, out_channels: int) -> Sequential:
    """BatchNorm -> ReLU -> 1x1 Conv2d -> AvgPool2d(2, 2): fewer channels, half the size."""
    return Sequential(BatchNorm(in_channels, num_dims=4), ReLU(),
                      Conv2d(in_channels, out_channels, kernel_size=1),
                      AvgPool2d(kernel_size=2, stride=2))


def densenet(stem_channels: int = 16, growth_rate: int = 8, convs_per_block: tuple = (2, 2, 2),
             in_channels: int = 1, num_classes: int = 10) -> Sequential:
    """A small DenseNet for (N, in_channels, 28, 28) images -> (N, num_classes) logits.

    stem:   Conv2d(in_channels, stem_channels, 3, padding=1) -> BatchNorm -> ReLU   (28x28)
    then:   a dense block per entry of ``convs_per_block``, with a transition block between
            two (channels halved, 28 -> 14 -> 7)
    head:   BatchNorm -> ReLU -> AdaptiveAvgPool2d(1) -> Flatten -> Linear

    d2l's DenseNet is the same plan for 96x96 images: a 7x7 stride-2 stem with max pooling,
    four dense blocks of four layers, growth rate 32.
    """
    layers = [Conv2d(in_channels, stem_channels, kernel_size=3, padding=1),
              BatchNorm(stem_channels, num_dims=4), ReLU()]
    channels = stem_channels
    for position, num_convs in enumerate(convs_per_block):
        layers.append(dense_block(num_convs, channels, growth_rate))
        channels += num_convs * growth_rate
        if position != len(convs_per_block) - 1:
            layers.append(transition_block(channels, channels // 2))
            channels //= 2
    layers += [BatchNorm(channels, num_dims=4), ReLU(), AdaptiveAvgPool2d(1), Flatten(),
               Linear(channels, num_classes)]
    return Sequential(*layers)
