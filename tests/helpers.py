"""Small models shared by the tests: a torch CNN and its Keras twin with copied weights."""

from __future__ import annotations

import contextlib


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


@contextlib.contextmanager
def keras_dtype(dtype: str):
    """Keras layers built in this block compute in ``dtype``. floatx and the global dtype policy both: once
    anything has read the policy, Keras keeps it, and layers built under a float64 floatx alone would still
    compute in float32."""
    import keras

    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)


def keras_twin(torch_model, image_size: int = 16, dtype: str = "float32", activations=("tanh", "softplus")):
    """The same network in Keras (channels last), weights copied from ``torch_model``; ``dtype='float64'``
    builds it in float64 (for discontinuous methods, compared where rounding cannot flip a selection);
    ``activations`` are the two convolutions' (``("relu", "relu")`` for a ReLU twin of the same shape)."""
    import keras

    conv1, conv2, linear = torch_model[0], torch_model[2], torch_model[6]
    with keras_dtype(dtype):
        model = keras.Sequential(
            [
                keras.Input((image_size, image_size, 3)),
                keras.layers.Conv2D(6, 3, padding="same", activation=activations[0]),
                keras.layers.ZeroPadding2D(1),
                keras.layers.Conv2D(8, 3, strides=2, padding="valid", activation=activations[1]),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(linear.out_features),
            ]
        )
    to_np = lambda t: t.detach().numpy()
    model.layers[0].set_weights([to_np(conv1.weight).transpose(2, 3, 1, 0), to_np(conv1.bias)])
    model.layers[2].set_weights([to_np(conv2.weight).transpose(2, 3, 1, 0), to_np(conv2.bias)])
    model.layers[4].set_weights([to_np(linear.weight).T, to_np(linear.bias)])
    return model


class PassGate:
    """Holds one call of a model's layer until released: "while a chunk is under way", without a clock.

    The forward hook counts calls of ``module`` (with whether gradients are recorded, which tells a
    gradient pass from a forward-only one) and blocks the first call for which ``when(calls, grad)`` is
    true until :meth:`release`. :attr:`under_way` is set when it blocks; :attr:`threads` records the
    thread of every call and :attr:`after_release` the calls made once released.
    """

    def __init__(self, module, when=lambda calls, grad: calls == 1, timeout: float = 60.0):
        import threading

        self.when, self.timeout = when, timeout
        self.calls = self.after_release = 0
        self.threads = []
        self.under_way, self._go, self._held = threading.Event(), threading.Event(), False
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        import threading

        import torch

        self.calls += 1
        self.threads.append(threading.current_thread())
        if self._go.is_set():
            self.after_release += 1
        if not self._held and self.when(self.calls, torch.is_grad_enabled()):
            self._held = True
            self.under_way.set()
            if not self._go.wait(self.timeout):
                raise RuntimeError("PassGate: never released")

    def wait(self) -> bool:
        """Block until a call is held; False on timeout."""
        return self.under_way.wait(self.timeout)

    def release(self) -> None:
        self._go.set()

    def remove(self) -> None:
        self.release()
        self.handle.remove()


def drain(panel, timeout: float = 60.0) -> None:
    """Return once everything the panel's worker thread was given has run (its queue is first in, first out)."""
    panel.host.worker._executor.submit(lambda: None).result(timeout)
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


def Gate(inner):
    """A torch module around ``inner`` that holds the first call made outside the main thread until
    ``release`` is set (``entered`` says it is held)."""
    import threading

    import torch

    class _Gate(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner
            self.entered, self.release = threading.Event(), threading.Event()

        def forward(self, x):
            if threading.current_thread() is not threading.main_thread() and not self.entered.is_set():
                self.entered.set()
                self.release.wait(30)
            return self.inner(x)

    return _Gate()


def own_options(method: str, **settings):
    """``settings`` without the options of other methods: one set of settings shared by several methods, as
    sw.attribute takes it (it refuses an option the method would ignore). Other keywords (seed, target, ...)
    pass through."""
    import salwidget as sw

    known = {name for m in sw.all_methods() for name in m.option_names}
    own = set(sw.get_method(method).option_names)
    return {k: v for k, v in settings.items() if k not in known or k in own}



@contextlib.contextmanager
def stand_ins(modules: dict):
    """Put stand-in modules in ``sys.modules`` while a reference library imports, then restore what was there
    (transformers probes for torchvision and must not find a stub afterwards)."""
    import sys

    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def import_zennit():
    """zennit (the LRP reference), imported where torchvision does not load (the registry's torchvision needs
    another torch build): zennit's package import reads two torchvision classes for its ResNet canonizers,
    unused here, so stand-ins are in place while it imports."""
    import sys
    import types

    if "zennit" in sys.modules:
        return sys.modules["zennit"]
    stubs = {}
    try:
        import torchvision  # noqa: F401
    except Exception:
        names = ("torchvision", "torchvision.models", "torchvision.models.resnet")
        stubs = {name: types.ModuleType(name) for name in names}
        for cls in ("Bottleneck", "BasicBlock"):
            setattr(stubs["torchvision.models.resnet"], cls, type(cls, (), {}))
    with stand_ins(stubs):
        import zennit
    return zennit


def small_panel(images, **options):
    """A panel on the small torch CNN with Gradient and SmoothGrad (4 samples), its first grid computed."""
    import salwidget as sw

    settings = dict(methods=("vanilla", "smoothgrad"), nsamples=4, nintegration=4)
    panel = sw.SaliencyWidget(make_torch_cnn(), images, **{**settings, **options})
    assert panel.wait(600)  # a deadline for a loaded machine, not a measure
    return panel
