"""tfresnet's ResNets written in plain PyTorch: the one model module of the PyTorch peers.

benchmarks/torch_resnet_bench.py times them against benchmarks/bench.py, and
benchmarks/torch_fashion_mnist_train.py trains `cifar_resnet` end to end (torchvision's ResNet-50
falls back to `resnet50` where torchvision does not import). Matched to tfresnet
(tfresnet/blocks.py, models.py, layers.py):

- CIFAR ResNet-6n+2 (16/32/64 filters), option-A shortcuts: identity, or stride-2 subsampling +
  zero channels appended after the input's where dimensions grow; no conv biases.
- ResNet-50: bottlenecks with projection shortcuts, the stride on the 3x3 conv (v1.5, as
  torchvision and tfresnet's default).
- BN after every conv: momentum 0.1 in torch's convention (Keras 0.9), epsilon 1e-5.
- Keras' he_normal for convs and the classifier: a normal truncated at 2 sigma, fan_in,
  std sqrt(2 / fan_in) / 0.8796; classifier bias and BN beta 0, BN gamma 1.

Done the PyTorch way rather than copied: 3x3/2 convs with padding=1 (TF's "same" pads only
bottom/right there), torch's unbiased running variance. Run models in channels_last memory.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of a unit normal truncated at +-2 (Keras)


def batch_norm(channels):
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN + option-A shortcut, ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = batch_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = batch_norm(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))  # zero channels after the input's
        return F.relu(y + x)


class Bottleneck(nn.Module):
    """1x1 - 3x3 (the stride) - 1x1 x4, each with BN, + identity or projection shortcut, ReLU."""

    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = batch_norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = batch_norm(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = batch_norm(cout)
        self.projection = None
        if stride != 1 or cin != cout:
            self.projection = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), batch_norm(cout)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.projection(x) if self.projection is not None else x))


def cifar_resnet(depth, in_channels=3, num_classes=10):
    """The paper's CIFAR ResNet with 6n+2 layers."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 (8, 14, 20, ...); got {depth}.")
    n = (depth - 2) // 6
    layers = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), batch_norm(16), nn.ReLU(True)]
    cin = 16
    for stage, cout in enumerate((16, 32, 64)):
        for block in range(n):
            layers.append(BasicBlock(cin, cout, 2 if stage and not block else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return keras_initialized(nn.Sequential(*layers))


def resnet50(num_classes=1000):
    """ImageNet ResNet-50 (v1.5) at any input size."""
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), batch_norm(64), nn.ReLU(True)]
    layers.append(nn.MaxPool2d(3, 2, 1))
    cin = 64
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True)):
        for block in range(blocks):
            layers.append(Bottleneck(cin, width, 2 if stage and not block else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, num_classes)]
    return keras_initialized(nn.Sequential(*layers))


def keras_initialized(model):
    """`model` with Keras' he_normal in every conv and linear weight, zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            keras_he_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def keras_he_normal_(weight):
    """Keras' he_normal: truncated normal (2 sigma), fan_in, std sqrt(2/fan_in)/0.8796."""
    std = math.sqrt(2.0 / weight[0].numel()) / TRUNCATED_NORMAL_STD
    with torch.no_grad():
        nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)
