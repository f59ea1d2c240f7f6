"""Small models shared by the tests: a torch CNN and its Keras twin with copied weights."""

from __future__ import annotations

def make_torch_cnn(num_classes: int = 5, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Conv2d(6, 8, 3, padding=1, stride=2),
        torch.nn.Softplus(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, num_classes),
    )
    return model.eval()


def keras_twin(torch_model, image_size: int = 16):
    """The same network in Keras (channels last), weights copied from ``torch_model``."""
    import keras

    conv1, conv2, linear = torch_model[0], torch_model[2], torch_model[6]
    model = keras.Sequential(
        [
            keras.Input((image_size, image_size, 3)),
            keras.layers.Conv2D(6, 3, padding="same", activation="tanh"),
            keras.layers.ZeroPadding2D(1),
            keras.layers.Conv2D(8, 3, strides=2, padding="valid", activation="softplus"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(linear.out_features),
        ]
    )
    to_np = lambda t: t.detach().numpy()
    model.layers[0].set_weights([to_np(conv1.weight).transpose(2, 3, 1, 0), to_np(conv1.bias)])
    model.layers[2].set_weights([to_np(conv2.weight).transpose(2, 3, 1, 0), to_np(conv2.bias)])
    model.layers[4].set_weights([to_np(linear.weight).T, to_np(linear.bias)])
    return model


def make_torch_segnet(num_classes: int = 3, seed: int = 0):
    """A small fully convolutional net: (B, 3, 16, 16) images to (B, num_classes, 16, 16) class maps."""
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Conv2d(6, 6, 3, padding=1),
        torch.nn.Softplus(),
        torch.nn.Conv2d(6, num_classes, 1),
    )
    return model.eval()


def keras_segnet_twin(torch_model, image_size: int = 16):
    """The segmentation net in Keras: (B, H, W, 3) to (B, H, W, K), weights copied from ``torch_model``."""
    import keras

    convs = [torch_model[0], torch_model[2], torch_model[4]]
    model = keras.Sequential(
        [
            keras.Input((image_size, image_size, 3)),
            keras.layers.Conv2D(6, 3, padding="same", activation="tanh"),
            keras.layers.Conv2D(6, 3, padding="same", activation="softplus"),
            keras.layers.Conv2D(convs[2].out_channels, 1),
        ]
    )
    for layer, conv in zip(model.layers, convs):
        layer.set_weights([conv.weight.detach().numpy().transpose(2, 3, 1, 0), conv.bias.detach().numpy()])
    return model
