"""Layer-wise Relevance Propagation (torch): zennit's rules and composites on the shadow copy.

LRP (Bach et al. 2015) sends the target's score back through the network
layer by layer, each layer dividing the relevance ``R`` of its outputs among
its inputs by a *rule*; the map is the relevance of the input. A *composite*
says which rule each layer gets (zennit's vocabulary and formulas; tested
equal to zennit 0.5.1, whose composites equal 1.0's). With ``x`` a layer's
input, ``z = f(x; W, b)`` its output, ``x+``/``W+`` the positive parts and
``stab(z) = z + 1e-6 * (sign(z) + [z == 0])``:

===================  ============================================================
``epsilon``          ``R_in = x * d/dx [z . R / stab(z)]`` (linear layers)
``zplus``            ``z = f(x+; W+, b+) + f(x-; W-, 0)``, same form on both parts
``alpha2_beta1``     ``2 * (positive part) - 1 * (negative part)``, each as zplus
``gamma``            ``W + 0.25 W+`` where ``z > 0``, ``W + 0.25 W-`` where ``z < 0``
``zbox``             ``z = f(x; W, b) - f(l; W+, b+) - f(h; W-, b-)`` with the input's
                     bounds ``l``, ``h`` (``box_low``/``box_high``; by default each
                     image's own minimum and maximum)
``flat``             ``R_in = d/dx [f(1; 1, 0) . R / stab(f(1; 1, 0))]``
``norm``             ``R_in = x * d/dx [z . R / stab(z)]`` (average pooling, additions)
``pass``             ``R_in = R`` (elementwise activations)
===================  ============================================================

==========================  ====================================================
composite                   rules
==========================  ====================================================
``epsilon_plus_flat``       first conv/linear layer flat, convolutions zplus,
                            linear epsilon (the default)
``epsilon_gamma_box``       first convolution zbox, convolutions gamma, linear
                            epsilon
``epsilon_alpha2_beta1``    convolutions alpha2_beta1, linear epsilon
==========================  ====================================================

Every composite: activations pass, average pooling and residual additions
norm, max pooling its gradient (relevance to the maximum). "First" is the
first such module in definition order (as zennit).

Canonizers rewrite a private shadow copy, never the user's model (its tensors
are never written): a BatchNorm right after a conv/linear layer (consecutive
in definition order, as zennit's ``SequentialMergeBatchNorm``) is folded into
it and removed; an addition of two tensors that both depend on the input
(``a + b``, ``torch.add``: a residual connection) splits its relevance in
proportion, ``R_a = a R / stab(a + b)``, as zennit's ResNet canonizer;
concatenation needs nothing (relevance goes back to where each part came
from). ReLUs called as functions get the pass rule too. zennit leaves a merged
BatchNorm dividing by ``sqrt(1 + eps)``; salwidget removes it.

The relevance at the output is the target's score, so ``sum(map) = f(x)`` up
to what biases and stabilisers absorb: that gap is ``Attribution.delta``.
A model with a layer no rule covers (e.g. a transformer's attention or
LayerNorm, a BatchNorm not after a conv/linear layer, a transposed
convolution) is refused, naming it and its type. Functional operations other
than activations and additions keep their gradient.

Keras models run the same rules on a rebuilt clone: :mod:`salwidget.methods.lrp_keras`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SaliencyError
from .base import Method, MethodOutput, Option, Stage, register
COMPOSITES = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1")
STABILIZER = 1e-6
GAMMA = 0.25


# ----------------------------------------------------------------- rules
def _stab(z):
    import torch

    # z + eps * (sign(z) + [z == 0]): +eps where z >= 0, -eps below, in two passes over z (a where over two
    # scalars took 7x as long). copysign reads the sign bit, so z = -0.0 gets -eps: such a z has only zero
    # terms x_i * w_i, so the relevance it sends back is zero either way.
    return torch.copysign(z.new_tensor(STABILIZER), z).add_(z)


def _grad(outputs, inputs, grad_outputs):
    import torch

    return torch.autograd.grad(outputs, inputs, grad_outputs)


_functional: dict = {}


def _direct(module):
    """The functional form of a plain conv/linear module (its exact type: a subclass may pad or reshape in a
    forward of its own), or None."""
    if not _functional:
        import torch.nn.functional as F
        from torch import nn

        _functional.update({nn.Linear: lambda m, x, w, b: F.linear(x, w, b)})
        for kind, conv in ((nn.Conv1d, F.conv1d), (nn.Conv2d, F.conv2d), (nn.Conv3d, F.conv3d)):
            _functional[kind] = (lambda conv: lambda m, x, w, b: conv(x, w, b, m.stride, m.padding, m.dilation,
                                                                       m.groups))(conv)
    call = _functional.get(type(module))
    if call is not None and getattr(module, "padding_mode", "zeros") != "zeros":
        return None
    return call


def _call(module, x, weight=None, bias=None, keep_bias=True):
    """``module`` on ``x`` with its parameters replaced; ``keep_bias=False`` leaves the bias out.

    Plain convolutions and linear layers call ``torch.nn.functional`` directly (``functional_call``'s
    re-parametrisation costs more than a small layer's arithmetic); other modules go through it."""
    import torch

    original_bias = getattr(module, "bias", None)
    direct = _direct(module)
    if direct is not None:
        bias = (original_bias if bias is None else bias) if keep_bias and original_bias is not None else None
        return direct(module, x, module.weight if weight is None else weight, bias)
    params = {}
    if weight is not None:
        params["weight"] = weight
    if original_bias is not None:
        original = original_bias if bias is None else bias
        params["bias"] = original if keep_bias else torch.zeros_like(original)
    return torch.func.functional_call(module, params, (x,)) if params else module(x)


def rule_epsilon(module, x, relevance, forward=None):
    """``R_in = x * d/dx [z . R / stab(z)]``; ``forward``: the module's own pass, ``(leaf input, output with
    its graph)``, kept from the forward (see :func:`reuses_forward`) so that ``z`` is not computed twice."""
    if forward is None:
        x = x.detach().requires_grad_(True)
        z = _call(module, x)
    else:
        x, z = forward
    (g,) = _grad(z, x, relevance / _stab(z))
    return x * g


rule_epsilon.reuses_forward = True


rule_norm = rule_epsilon


def _has_negative(x) -> bool:
    """Whether ``x`` has a negative part: after a ReLU it has none, and the rules' terms on it are zero."""
    return bool(x.amin() < 0)  # a reduction: no boolean temporary (6x faster than (x < 0).any())


def _signed_parts(module, x, weight_positive: bool, bias_positive: bool | None):
    """[f(x+; W+-, b+-), f(x-; W-+, 0)] and the inputs (x+, x-); the second pair left out when ``x >= 0``
    (f(0; W, 0) = 0 exactly: the same sums, two convolutions fewer)."""
    w = module.weight
    first_w = w.clamp(min=0) if weight_positive else w.clamp(max=0)
    b = getattr(module, "bias", None)
    first_b = None if b is None else (b.clamp(min=0) if bias_positive else b.clamp(max=0))
    signed = _has_negative(x)
    positive = (x.clamp(min=0) if signed else x).detach().requires_grad_(True)  # x >= 0 is its own x+
    outputs, inputs = [_call(module, positive, first_w, first_b)], [positive]
    if signed:
        second_w = w.clamp(max=0) if weight_positive else w.clamp(min=0)
        inputs.append(x.clamp(max=0).detach().requires_grad_(True))
        outputs.append(_call(module, inputs[1], second_w, keep_bias=False))
    return outputs, inputs


def _total(parts):
    return parts[0] if len(parts) == 1 else parts[0] + parts[1]


def _relevance(inputs, grads):
    return inputs[0] * grads[0] if len(inputs) == 1 else inputs[0] * grads[0] + inputs[1] * grads[1]


def rule_zplus(module, x, relevance):
    outputs, inputs = _signed_parts(module, x, True, True)
    scaled = relevance / _stab(_total(outputs))
    return _relevance(inputs, _grad(outputs, inputs, [scaled] * len(outputs)))


def rule_alpha2_beta1(module, x, relevance, alpha=2.0, beta=1.0):
    pos_out, pos_in = _signed_parts(module, x, True, True)
    neg_out, neg_in = _signed_parts(module, x, False, False)
    pos_scaled = relevance / _stab(_total(pos_out))
    neg_scaled = relevance / _stab(_total(neg_out))
    gp = _grad(pos_out, pos_in, [pos_scaled] * len(pos_out))
    gn = _grad(neg_out, neg_in, [neg_scaled] * len(neg_out))
    return alpha * _relevance(pos_in, gp) - beta * _relevance(neg_in, gn)


def rule_gamma(module, x, relevance, forward=None, gamma=GAMMA):
    w, b = module.weight, getattr(module, "bias", None)
    up, down = w + gamma * w.clamp(min=0), w + gamma * w.clamp(max=0)
    b_up = None if b is None else b + gamma * b.clamp(min=0)
    b_down = None if b is None else b + gamma * b.clamp(max=0)
    signed = _has_negative(x)  # without a negative part its two terms are zero: left out (as in _signed_parts)
    x_pos = x.clamp(min=0) if signed else x  # x >= 0 is its own x+
    x_neg = x.clamp(max=0) if signed else None
    terms = [(x_pos, up, b_up, True), (x_neg, down, None, False), (x_pos, down, b_down, True), (x_neg, up, None, False)]
    kept = [terms[k] for k in ((0, 1, 2, 3) if signed else (0, 2))]
    inputs = [t[0].detach().requires_grad_(True) for t in kept]
    outputs = [_call(module, i, w_, b_, keep_bias=k_) for i, (_, w_, b_, k_) in zip(inputs, kept)]
    plain = _call(module, x.detach()) if forward is None else forward[1].detach()  # z's sign picks the weights
    positive = (plain > 0).to(plain) * relevance / _stab(outputs[0] + outputs[1] if signed else outputs[0])
    negative = (plain < 0).to(plain) * relevance / _stab(outputs[2] + outputs[3] if signed else outputs[1])
    grads = _grad(outputs, inputs, [positive, positive, negative, negative] if signed else [positive, negative])
    return sum(i * g for i, g in zip(inputs, grads))


rule_gamma.reuses_forward = True


def rule_zbox(module, x, relevance, low=None, high=None):
    import torch

    x = x.detach()
    reduce = tuple(range(1, x.dim()))
    low = x.amin(dim=reduce, keepdim=True) if low is None else torch.as_tensor(low, dtype=x.dtype, device=x.device)
    high = x.amax(dim=reduce, keepdim=True) if high is None else torch.as_tensor(high, dtype=x.dtype, device=x.device)
    inputs = [x.requires_grad_(True), (low + torch.zeros_like(x)).requires_grad_(True),
              (high + torch.zeros_like(x)).requires_grad_(True)]
    w, b = module.weight, getattr(module, "bias", None)
    outputs = [_call(module, inputs[0]),
               _call(module, inputs[1], w.clamp(min=0), None if b is None else b.clamp(min=0)),
               _call(module, inputs[2], w.clamp(max=0), None if b is None else b.clamp(max=0))]
    scaled = relevance / _stab(outputs[0] - outputs[1] - outputs[2])
    grads = _grad(outputs, inputs, [scaled] * 3)
    return inputs[0] * grads[0] - inputs[1] * grads[1] - inputs[2] * grads[2]


def rule_flat(module, x, relevance):
    import torch

    ones = torch.ones_like(x).requires_grad_(True)
    z = _call(module, ones, torch.ones_like(module.weight), keep_bias=False)
    (g,) = _grad(z, ones, relevance / _stab(z))
    return g


# ----------------------------------------------------------------- torch machinery
_torch_parts: dict = {}


def _torch():
    """The autograd functions, wrapper modules and function mode (built once, on first use)."""
    if _torch_parts:
        return _torch_parts
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    class RuleFunction(torch.autograd.Function):
        """The module's own output; backward: the rule's relevance of the input. A rule that reads the
        module's own output (``reuses_forward``) gets this pass, graph included, instead of a second one."""

        @staticmethod
        def forward(ctx, x, module, rule):
            ctx.module, ctx.rule = module, rule
            ctx.save_for_backward(x)  # also for a reused pass: an in-place change of x fails, as autograd's
            if getattr(rule, "reuses_forward", False):
                with torch.enable_grad():
                    leaf = x.detach().requires_grad_(True)
                    z = module(leaf)
                ctx.forward = (leaf, z)
                return z.detach().clone()  # a copy: an in-place activation after the layer must not change z
            return module(x)

        @staticmethod
        def backward(ctx, relevance):
            # The rule's own ops need no relevance mode: without it each op skips a Python dispatch.
            with torch.enable_grad(), torch._C.DisableTorchFunction():
                (x,) = ctx.saved_tensors
                if getattr(ctx.rule, "reuses_forward", False):
                    forward, ctx.forward = ctx.forward, None  # the graph is freed with this pass
                    return ctx.rule(ctx.module, x, relevance, forward=forward), None, None
                return ctx.rule(ctx.module, x, relevance), None, None

    class Ruled(torch.nn.Module):
        def __init__(self, inner, rule):
            super().__init__()
            self.inner, self.rule = inner, rule

        def forward(self, x):
            return RuleFunction.apply(x, self.inner, self.rule)

    class PassFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            return y.view_as(y)

        @staticmethod
        def backward(ctx, relevance):
            return relevance, None

    class SumFunction(torch.autograd.Function):
        """``a + b``; backward: the relevance split in proportion to each term."""

        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a + b

        @staticmethod
        def backward(ctx, relevance):
            a, b = ctx.saved_tensors
            scaled = relevance / _stab(a + b)
            return a * scaled, b * scaled

    class StartRelevance(torch.autograd.Function):
        """The output itself; backward: the incoming one-hot times the output (relevance = the score)."""

        @staticmethod
        def forward(ctx, out):
            ctx.save_for_backward(out)
            return out.view_as(out)

        @staticmethod
        def backward(ctx, grad):
            (out,) = ctx.saved_tensors
            return grad * out

    activations = {torch.relu, F.relu, torch.Tensor.relu, F.relu6, F.hardtanh, torch.sigmoid, F.sigmoid,
                   torch.Tensor.sigmoid, torch.tanh, F.tanh, torch.Tensor.tanh, F.softplus, F.elu, F.leaky_relu,
                   F.gelu, F.silu}
    in_place = {torch.relu_: torch.relu, torch.Tensor.relu_: torch.relu}
    additions = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.add_,
                 torch.Tensor.__iadd__}

    class RelevanceMode(TorchFunctionMode):
        """Activations pass relevance; additions of two input-dependent tensors split it."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in activations or func in in_place:
                x = args[0]
                if not (isinstance(x, torch.Tensor) and x.requires_grad):
                    return func(*args, **kwargs)
                call = in_place.get(func, func)
                inplace = func in in_place or kwargs.pop("inplace", False)
                if func in (F.relu, F.relu6) and len(args) > 1:
                    inplace, args = bool(args[1]), args[:1]
                with torch._C.DisableTorchFunction():
                    y = call(*args, **kwargs)
                out = PassFunction.apply(x, y)
                return x.copy_(out) if inplace else out
            if func in additions and len(args) == 2 and not kwargs:
                a, b = args
                if (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.requires_grad
                        and b.requires_grad and a.shape == b.shape):
                    in_place_add = func in (torch.Tensor.add_, torch.Tensor.__iadd__)
                    # In place, the sum saves a copy of a: writing the sum into a must not change what it saved.
                    out = SumFunction.apply(a.clone() if in_place_add else a, b)
                    if in_place_add:
                        with torch.no_grad():
                            a.copy_(out)
                        return out
                    return out
            return func(*args, **kwargs)

    class Relevance(torch.nn.Module):
        """The canonized shadow whose outputs start the relevance at the target's score."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            out = self.inner(*args, **kwargs)
            if isinstance(out, torch.Tensor):
                return StartRelevance.apply(out)
            if isinstance(out, (tuple, list)):
                return type(out)(StartRelevance.apply(o) if isinstance(o, torch.Tensor) else o for o in out)
            raise SaliencyError(f"LRP needs the model to return a tensor or a tuple of tensors; got {type(out).__name__}.")

    _torch_parts.update(Ruled=Ruled, mode=RelevanceMode, Relevance=Relevance)
    return _torch_parts


def _kinds():
    import torch
    from torch import nn

    convolutions = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    return dict(
        convolutions=convolutions,
        linear=convolutions + (nn.Linear,),
        batch_norm=(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d),
        avg_pool=(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                  nn.AdaptiveAvgPool3d),
        gradient=(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                  nn.AdaptiveMaxPool3d, nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d,
                  nn.Dropout2d, nn.Dropout3d),
        activations=(nn.ELU, nn.Hardsigmoid, nn.Hardtanh, nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SELU,
                     nn.CELU, nn.GELU, nn.Sigmoid, nn.SiLU, nn.Softplus, nn.Tanh),
        torch=torch,
    )


def _set(root, name: str, module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _merge_batch_norm(linear, batch_norm) -> None:
    """Fold ``batch_norm`` into ``linear`` (new tensors on the shadow's module; the user's are not written)."""
    torch = _kinds()["torch"]
    with torch.no_grad():
        scale = batch_norm.weight / (batch_norm.running_var + batch_norm.eps) ** 0.5 if batch_norm.affine else \
            1.0 / (batch_norm.running_var + batch_norm.eps) ** 0.5
        shift = batch_norm.bias if batch_norm.affine else torch.zeros_like(scale)
        weight = linear.weight
        index = (slice(None),) + (None,) * (weight.dim() - 1)
        if isinstance(linear, torch.nn.ConvTranspose2d):  # not reached: refused before
            raise SaliencyError("transposed convolutions are not covered")
        bias = linear.bias if linear.bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype,
                                                                        device=weight.device)
        linear.weight = torch.nn.Parameter(weight * scale[index], requires_grad=False)
        linear.bias = torch.nn.Parameter((bias - batch_norm.running_mean) * scale + shift, requires_grad=False)


def canonize(shadow, composite: str, low=None, high=None):
    """The shadow with BatchNorms merged and rules attached; a clear error for a layer no rule covers."""
    kinds = _kinds()
    parts = _torch()
    leaves = [(name, m) for name, m in shadow.named_modules() if name and not list(m.children())]
    covered = kinds["linear"] + kinds["batch_norm"] + kinds["avg_pool"] + kinds["gradient"] + kinds["activations"]
    for name, module in shadow.named_modules():
        if list(module.children()) and list(module.parameters(recurse=False)):
            raise SaliencyError(
                f"LRP has no rule for module {name or '(the model)'!r} ({type(module).__name__}): it uses parameters "
                "of its own in its forward (e.g. a class token or position embedding)."
            )
    for name, module in leaves:
        if not isinstance(module, covered) or type(module).__name__.startswith("ConvTranspose"):
            raise SaliencyError(
                f"LRP has no rule for layer {name!r} ({type(module).__name__}). Covered: convolutions, linear "
                "layers, BatchNorm after a conv/linear layer, average and max pooling, elementwise activations, "
                "flatten, dropout and identity. Use a gradient method (e.g. 'integrated' or 'deeplift') for this model."
            )
    previous = None
    for name, module in leaves:
        if isinstance(module, kinds["batch_norm"]):
            if previous is None or not isinstance(previous[1], kinds["linear"]):
                raise SaliencyError(
                    f"LRP has no rule for layer {name!r} ({type(module).__name__}): a BatchNorm is merged into the "
                    "conv/linear layer right before it (in definition order), and none precedes it."
                )
            _merge_batch_norm(previous[1], module)
            _set(shadow, name, kinds["torch"].nn.Identity())
        previous = (name, module)
    first = True
    for name, module in leaves:
        rule = None
        if isinstance(module, kinds["linear"]):
            convolution = isinstance(module, kinds["convolutions"])
            if composite == "epsilon_plus_flat":
                rule = rule_flat if first else (rule_zplus if convolution else rule_epsilon)
                first = False
            elif composite == "epsilon_gamma_box":
                if convolution and first:
                    rule, first = (lambda m, x, r: rule_zbox(m, x, r, low, high)), False
                else:
                    rule = rule_gamma if convolution else rule_epsilon
            else:
                rule = rule_alpha2_beta1 if convolution else rule_epsilon
        elif isinstance(module, kinds["avg_pool"]):
            rule = rule_norm
        if rule is not None:
            _set(shadow, name, parts["Ruled"](module, rule))
    return parts["Relevance"](shadow)


class LRPVariant:
    """The :class:`~salwidget.backends.base.ModelVariant` of one composite (a private, canonized shadow)."""

    keeps_shadow = False

    def __init__(self, composite: str, low=None, high=None):
        self.composite, self.low, self.high = composite, low, high

    def torch(self, shadow):
        return canonize(shadow, self.composite, self.low, self.high)

    @property
    def torch_context(self):
        return _torch()["mode"]

    def keras(self, model):
        from .lrp_keras import KERAS_LRP

        return KERAS_LRP.get(model, self.composite, self.low, self.high)


@dataclass
class LRPState:
    maps: list  # per input, (B, ...) relevance
    delta: Any  # (B,) sum of relevance minus the target's score
    done: int = 0


class LRP(Method):
    name = "lrp"
    order = 68
    label = "LRP"
    signed = True
    summary = ("Layer-wise Relevance Propagation (Bach et al. 2015) with zennit's composites: the target's score "
               "divided among the inputs layer by layer; sum(map) ~ f(x), the gap is reported as delta.")
    options = (
        Option("composite", "epsilon_plus_flat", "Which rule each layer gets (zennit's composites).",
               kind="choice", choices=COMPOSITES, label="composite"),
        Option("box_low", None, "epsilon_gamma_box: the lowest possible input value (None: each image's minimum).",
               kind="float", allow_none=True, label="box low"),
        Option("box_high", None, "epsilon_gamma_box: the highest possible input value (None: each image's maximum).",
               kind="float", allow_none=True, label="box high"),
    )

    def single_pass(self, options: dict) -> bool:
        return True  # one modified backward pass per clean image: its outputs are the clean pass's

    def variant(self, options: dict):
        return LRPVariant(options["composite"], options["box_low"], options["box_high"])

    def start(self, ctx, resume=None) -> LRPState:
        return LRPState([ctx.ops.zeros(x.shape) for x in ctx.host_inputs], ctx.ops.zeros((ctx.batch,)))

    def passes_left(self, ctx, state: LRPState) -> int:
        return ctx.batch - state.done

    def stages(self, ctx, state: LRPState):
        if self.passes_left(ctx, state) > 0:
            yield Stage(ctx.batch, lambda start, stop: self._run_chunk(ctx, state, start, stop))

    def _run_chunk(self, ctx, state: LRPState, start: int, stop: int) -> None:
        ops, images = ctx.ops, np.arange(start, stop)
        relevance, scores = ctx.gradients([x[start:stop] for x in ctx.inputs], images)
        total = None
        for m, r in enumerate(relevance):
            r = ops.cast_like(r, state.maps[m])
            state.maps[m] = ops.put(state.maps[m], images, r)
            part = ops.row_sum(r)
            total = part if total is None else total + part
        state.delta = ops.put(state.delta, images, total - ops.cast_like(scores, total))
        state.done += stop - start

    def finish(self, ctx, state: LRPState) -> MethodOutput:
        return MethodOutput(list(state.maps), 1, {"delta": ctx.ops.numpy(state.delta).astype(np.float64)})

    def preview(self, ctx, state: LRPState) -> MethodOutput:
        return MethodOutput(list(state.maps), 0)


LRP_METHOD = register(LRP())
