"""PyTorch backend: ``torch.autograd.grad`` on the model's own device."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import SaliencyError
from .base import model_call_error, not_differentiable


def _model_device_and_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def _as_list(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in output):
        return list(output)
    if isinstance(output, dict) and all(isinstance(o, torch.Tensor) for o in output.values()):
        return list(output.values())
    raise SaliencyError(
        f"The model returned a {type(output).__name__}; salwidget needs a tensor of class "
        "scores (or a tuple/list/dict of them)."
    )


class TorchBackend:
    """Runs a ``torch.nn.Module`` in eval mode on its own device (CUDA, MPS or CPU)."""

    framework = "torch"

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._device, self._dtype = _model_device_and_dtype(model)
        self.device = str(self._device)
        # Keras 3 on the torch backend is a torch Module with Keras' channels-last habit.
        self.default_channels_last = any(
            cls.__module__.split(".")[0] == "keras" for cls in type(model).__mro__
        )

    @contextmanager
    def session(self) -> Iterator[None]:
        """Eval mode and frozen parameters for the computation; the model is left as found.

        Freezing the parameters means autograd neither computes nor keeps what it
        would need for their gradients: no ``.grad`` is written and memory is saved.
        """
        model = self.model
        modes = [(m, m.training) for m in model.modules()]
        frozen = [p for p in model.parameters() if p.requires_grad]
        model.eval()
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)
            for module, training in modes:
                module.training = training

    def _to_tensors(self, inputs: Sequence[np.ndarray], grad: bool) -> list[torch.Tensor]:
        tensors = []
        for x in inputs:
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self._device, self._dtype)
            tensors.append(t.requires_grad_(grad))
        return tensors

    def _call(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        try:
            return _as_list(self.model(*tensors))
        except SaliencyError:
            raise
        except Exception as exc:  # the model's own error, with the shapes it got
            hint = "torch models usually take (B, C, H, W); pass channels_last=True if yours takes (B, H, W, C)"
            raise model_call_error(exc, [t.shape for t in tensors], hint) from exc

    def forward(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            outputs = self._call(self._to_tensors(inputs, grad=False))
        return [o.detach().float().cpu().numpy() for o in outputs]

    def gradients(
        self, inputs: Sequence[np.ndarray], targets: dict[int, np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        tensors = self._to_tensors(inputs, grad=True)
        with torch.enable_grad():
            outputs = self._call(tensors)
            outputs_np = [o.detach().float().cpu().numpy() for o in outputs]
            score = 0
            for index, target in targets.items():
                rows = torch.as_tensor(target, device=outputs[index].device, dtype=torch.long)
                score = score + outputs[index].gather(1, rows[:, None]).sum()
            if not isinstance(score, torch.Tensor) or not score.requires_grad:
                raise not_differentiable("the class score does not require grad")
            grads = torch.autograd.grad(score, tensors, allow_unused=True)
        missing = [i for i, g in enumerate(grads) if g is None]
        if missing:
            raise not_differentiable(f"input {missing[0]} does not reach the class score")
        return [g.detach().float().cpu().numpy() for g in grads], outputs_np
