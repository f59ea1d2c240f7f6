"""Small torch models for the LRP tests and benchmark: VGG-like with BatchNorm, ResNet-like, an MLP."""

from __future__ import annotations

import torch
from torch import nn

from .helpers import import_zennit, keras_dtype

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


class Branches(nn.Module):
    """Two convolutions of the same features concatenated (an Inception-like join)."""

    def __init__(self, seed=0, classes=5):
        super().__init__()
        torch.manual_seed(seed)
        self.stem, self.relu = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()
        self.left, self.right = nn.Conv2d(6, 4, 3, padding=1), nn.Conv2d(6, 4, 3, padding=1)
        self.relu2, self.pool = nn.ReLU(), nn.AvgPool2d(2)
        self.flatten, self.fc = nn.Flatten(), nn.Linear(8 * 8 * 8, classes)

    def forward(self, x):
        x = self.relu(self.stem(x))
        return self.fc(self.flatten(self.pool(self.relu2(torch.cat([self.left(x), self.right(x)], dim=1)))))


def mlp(seed=0, classes=5):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                         nn.Linear(16, classes)).eval()


def twin_with_zennit_sums(model: ResNetLike) -> ResNetLike:
    """The same weights, additions through zennit's Sum."""
    twin = ResNetLike(zennit_sum=True)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


# ----------------------------------------------------------------- Keras twins (channels last, the same weights)
def _flatten_shapes(model, image_size):
    """The (C, H, W) shape reaching each Flatten of ``model`` (the next Linear's rows are permuted for Keras)."""
    shapes = {}

    def record(module, inputs, output):
        shapes[module] = tuple(inputs[0].shape[1:])

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Flatten)]
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size, dtype=next(model.parameters()).dtype))
    for h in hooks:
        h.remove()
    return shapes


def _to_keras(module, after_flatten=None):
    """One torch layer as a Keras layer (built by the caller) and a function copying its weights into it."""
    import keras

    L = keras.layers
    as_np = lambda t: t.detach().cpu().numpy()  # noqa: E731
    if isinstance(module, nn.Conv2d):
        assert module.padding in ((1, 1), (0, 0)) and module.kernel_size == (3, 3) and module.stride == (1, 1)
        layer = L.Conv2D(module.out_channels, 3, padding="same" if module.padding == (1, 1) else "valid")
        return layer, lambda: layer.set_weights([as_np(module.weight).transpose(2, 3, 1, 0), as_np(module.bias)])
    if isinstance(module, nn.BatchNorm2d):
        layer = L.BatchNormalization(epsilon=module.eps)
        return layer, lambda: layer.set_weights([as_np(module.weight), as_np(module.bias),
                                                 as_np(module.running_mean), as_np(module.running_var)])
    if isinstance(module, nn.Linear):
        layer = L.Dense(module.out_features)

        def copy_weights():
            w = as_np(module.weight).T
            if after_flatten is not None and len(after_flatten) == 3:  # (C, H, W) rows -> (H, W, C) rows
                c, h, wd = after_flatten
                w = w.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(c * h * wd, -1)
            layer.set_weights([w, as_np(module.bias)])

        return layer, copy_weights
    simple = {nn.ReLU: lambda m: L.ReLU(), nn.MaxPool2d: lambda m: L.MaxPooling2D(m.kernel_size),
              nn.AvgPool2d: lambda m: L.AveragePooling2D(m.kernel_size), nn.Flatten: lambda m: L.Flatten(),
              nn.Dropout: lambda m: L.Dropout(m.p),
              nn.AdaptiveAvgPool2d: lambda m: L.GlobalAveragePooling2D(keepdims=True)}
    return simple[type(module)](module), lambda: None


def keras_lrp_twin(model, image_size=16, dtype="float64"):
    """The Keras twin of :func:`vgg_like`, :func:`mlp` (Sequential), :class:`ResNetLike` (functional, residual
    ``Add``) or :class:`Branches` (``Concatenate``), channels last, with ``model``'s weights."""
    import keras

    shapes = _flatten_shapes(model, image_size)
    copies = []

    def convert(module, after_flatten=None):
        layer, copy_weights = _to_keras(module, after_flatten)
        copies.append(copy_weights)
        return layer

    with keras_dtype(dtype):
        inputs = keras.Input((image_size, image_size, 3))
        if isinstance(model, nn.Sequential):
            x, flattened = inputs, None
            for module in model:
                x = convert(module, flattened)(x)
                flattened = shapes.get(module, flattened if isinstance(module, (nn.ReLU, nn.Dropout)) else None)
            twin = keras.Model(inputs, x)
        elif isinstance(model, Branches):
            x = convert(model.relu)(convert(model.stem)(inputs))
            x = keras.layers.Concatenate()([convert(model.left)(x), convert(model.right)(x)])
            x = convert(model.flatten)(convert(model.pool)(convert(model.relu2)(x)))
            twin = keras.Model(inputs, convert(model.fc, shapes[model.flatten])(x))
        else:
            def block(b, x):
                out = convert(b.bn2)(convert(b.conv2)(convert(b.relu1)(convert(b.bn1)(convert(b.conv1)(x)))))
                return convert(b.relu2)(keras.layers.Add()([out, x]))

            x = convert(model.relu)(convert(model.bn)(convert(model.stem)(inputs)))
            x = block(model.block2, convert(model.pool)(block(model.block1, x)))
            x = convert(model.flatten)(convert(model.gap)(x))
            twin = keras.Model(inputs, convert(model.fc)(x))
    for copy_weights in copies:
        copy_weights()
    return twin
