"""Small torch models for the LRP tests and benchmark: VGG-like with BatchNorm, ResNet-like, an MLP."""

from __future__ import annotations

import torch
from torch import nn

from .helpers import import_zennit

import_zennit()  # the reference; imported once, torchvision stubbed where it does not load


def _tiny_eps_batch_norm(channels):
    # zennit leaves a merged BatchNorm dividing by sqrt(1 + eps); a tiny eps keeps that quirk below the tolerance.
    bn = nn.BatchNorm2d(channels, eps=1e-12)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    return bn


def vgg_like(seed=0, classes=5):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), _tiny_eps_batch_norm(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), _tiny_eps_batch_norm(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, classes),
    ).eval()


class Block(nn.Module):
    """conv-bn-relu-conv-bn plus the skip; ``zennit_sum`` adds through zennit's Sum layer (its ResNet canonizer's
    form of the addition), otherwise with ``+``."""

    def __init__(self, channels, zennit_sum=None):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1), _tiny_eps_batch_norm(channels)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1), _tiny_eps_batch_norm(channels)
        self.relu2 = nn.ReLU()
        self.zennit_sum = zennit_sum

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.zennit_sum is not None:
            return self.relu2(self.zennit_sum(torch.stack([out, x], dim=-1)))
        return self.relu2(out + x)


class ResNetLike(nn.Module):
    def __init__(self, seed=0, classes=5, zennit_sum=False):
        super().__init__()
        torch.manual_seed(seed)
        make_sum = None
        if zennit_sum:
            from zennit.layer import Sum

            make_sum = Sum
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1), _tiny_eps_batch_norm(8)
        self.relu = nn.ReLU()
        self.block1 = Block(8, make_sum and make_sum())
        self.pool = nn.AvgPool2d(2)
        self.block2 = Block(8, make_sum and make_sum())
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten, self.fc = nn.Flatten(), nn.Linear(8, classes)

    def forward(self, x):
        x = self.block2(self.pool(self.block1(self.relu(self.bn(self.stem(x))))))
        return self.fc(self.flatten(self.gap(x)))


def mlp(seed=0, classes=5):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                         nn.Linear(16, classes)).eval()


def twin_with_zennit_sums(model: ResNetLike) -> ResNetLike:
    """The same weights, additions through zennit's Sum."""
    twin = ResNetLike(zennit_sum=True)
    twin.load_state_dict(model.state_dict())
    return twin.eval()
