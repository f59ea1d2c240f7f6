"""Class activation maps: Grad-CAM, Grad-CAM++, LayerCAM and Score-CAM.

A CAM reads one layer's activation ``A`` (channels ``A_k``, positions ``(i, j)``)
and, for the gradient methods, the gradient ``g = dS/dA`` of the explained
score ``S`` (the raw output of the target class, no softmax). Its map is the
positive part of a weighted sum over channels, at the layer's own resolution
(``Attribution.raw`` is (B, h, w), not normalised; ``to_grayscale`` upsamples
it bilinearly to the input's size):

=========  ==============================================================
gradcam    ``ReLU(sum_k w_k A_k)``, ``w_k = mean_ij g_kij`` (Selvaraju et al.
           2017; as torchcam and pytorch-grad-cam). On a global-average-pooled
           linear head ``S = sum_k W_k mean_ij A_kij`` this is
           ``ReLU(sum_k W_k A_k) / (h * w)``: the original CAM divided by the
           number of positions.
gradcampp  ``ReLU(sum_k w_k A_k)``, ``w_k = sum_ij ReLU(g_kij) a_kij`` with
           ``a = g^2 / (2 g^2 + (sum_ab A_kab) g^3 + 1e-6)`` where ``g != 0``,
           else 0: pytorch-grad-cam's closed form of Chattopadhay et al.'s
           eq. 19. (torchcam's GradCAMpp puts ``sum_ab A_kab g_kab^3`` in the
           denominator instead, so the two libraries differ.)
layercam   ``ReLU(sum_k ReLU(g_k) * A_k)`` per position (Jiang et al. 2021; as
           torchcam and pytorch-grad-cam).
scorecam   ``ReLU(sum_k w_k A_k)``, ``w = softmax_k(s_k)``, ``s_k`` the target's
           raw score on ``x * M_k`` where ``M_k`` is channel ``k`` upsampled to
           the input (bilinear, half-pixel centres) and min-max normalised
           (``(M - min) / (max - min + 1e-8)``). As pytorch-grad-cam: raw
           scores, no softmax over classes, no baseline subtracted. (torchcam
           subtracts the clean score ``f(x)``, which the softmax over channels
           cancels; it normalises before upsampling. pytorch-grad-cam upsamples
           with aligned corners; half-pixel centres are what torch's default
           and ``tf.image.resize`` share.) One forward pass per channel and
           image (the channels constant on an image share one: their mask is
           0), run in chunks by the engine (progress, cancel, bounded memory).
=========  ==============================================================

The layer: ``layer=None`` takes the last layer (in call order) whose output is
a spatial feature map, (B, C, h, w) in torch or (B, h, w, C) in Keras, with
more than one position: found with one forward pass of two copies of one
image (an output whose first axis is not the images, such as attention
windows, is no candidate), as torchcam's ``locate_candidate_layer`` (and
remembered per model and input shape). When the last such layer is a
transformer's token layer (or a feature map in the other framework's layout),
or a branch that feeds no explained output (UperNet's ``auxiliary_head``, which
feeds only the training loss; one probe tells), it is the last one whose CAM
is not zero: walking back from the output, a few
one-image probes; a block whose map is zero is followed by its own first layer
(the block's input norm). In a ViT whose head reads the class token this is
the last block's input norm (``blocks[-1].norm1``; Hugging Face's
``vit.layers.<last>.layernorm_before``); in a Swin, its final norm over the
last stage's tokens. Otherwise a ``named_modules`` name, a Keras layer name, or
the module/layer object.

Layouts (see :mod:`salwidget.methods.layer_grids`): token outputs (B, N, C) lose
their leading class/prefix tokens (``prefix_tokens``; by default the fewest of
0, 1 or 2 that leave a grid with the input's aspect ratio, a perfect square
for square inputs) and the rest is folded row-major into (h, w); a Swin
stage's (B, h*w, C) and a torch (B, h, w, C) map are read as grids too. A
layer that cannot be read as a grid is an error naming one that can. Other
layouts take ``reshape=f``: ``f(layer_output)`` returns the framework's own
feature-map layout, (B, C, h, w) in torch (so pytorch-grad-cam's
``reshape_transform`` functions work unchanged) and (B, h, w, C) in Keras; it
is applied to the activation and its gradient alike, so it must only move,
select or reshape values.

Multi-input models: the map is for input 0 (its spatial size; Score-CAM masks
input 0 and passes the others unchanged).

Zero maps. When the score's gradient is zero at every position of the layer
for every image (the last block of a Vision Transformer whose head reads only
the class token: its patch tokens do not reach the score), a gradient CAM
raises :class:`~salwidget.errors.SaliencyError` naming the nearest earlier
layer whose map is not zero (a few one-image probes), rather than showing a
blank map; the panel shows the message. A map that is zero because only
negative evidence survives the ReLU (a class that is not in the picture) is a
result: it is returned, ``Attribution.extras['zero_maps']`` lists those images
and a warning says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..caches import OwnerCache
from ..errors import SaliencyError
from .base import Method, MethodOutput, Option, RunContext, Stage, register
from .layer_grids import Grid, grid_layers, read_grid, to_channels_first, token_grid  # noqa: F401

# A forward pass costs about a third of a forward+backward pass: Score-CAM's
# masked passes run in chunks three times as big as gradient passes.
FORWARD_COST = 1.0 / 3.0
_SUGGESTION_TRIES = 4  # earlier layers tried (one image each) when a map is all zero
_AUTO_TRIES = 8  # token layers probed (one image each) for the automatic layer
_SHAPE_ROWS = 2  # rows of the probe that records layer shapes: an output with another first axis is not the images'

RESHAPE = Option(
    "reshape", None,
    "A function from the CAM layer's output to a feature map, (B, C, h, w) in torch or (B, h, w, C) in Keras, "
    "for layouts that are not read as a grid by themselves.",
    kind="any", allow_none=True, label="reshape",
)
PREFIX_TOKENS = Option(
    "prefix_tokens", None,
    "Leading tokens (class, distillation, register) a transformer layer's (B, N, C) output loses before "
    "folding into a grid; None tries 0, 1 and 2.",
    kind="int", minimum=0, allow_none=True, label="prefix tokens",
)


def _channels_last_layers(ctx: RunContext) -> bool:
    """Whether the model's feature maps are (B, h, w, C): Keras' layout; torch's is (B, C, h, w)."""
    return ctx.backend.framework == "tensorflow"


def feature_map(ctx: RunContext, tensor: Any, layer: str) -> Any:
    """A layer's output (or its gradient) as (B, C, h, w) on the device, whatever the framework."""
    ops = ctx.ops
    last = _channels_last_layers(ctx)
    wanted = "(B, h, w, C)" if last else "(B, C, h, w)"
    reshape = ctx.options.get("reshape")
    if reshape is not None:
        tensor = reshape(tensor)
        shape = tuple(tensor.shape)
        if len(shape) != 4:
            raise SaliencyError(
                f"reshape= returned shape {shape} for the output of layer {layer!r}; it must return a feature map {wanted}."
            )
        return ops.transpose(tensor, (0, 3, 1, 2)) if last else tensor
    shape = tuple(int(d) for d in tensor.shape)
    if len(shape) == 3:
        try:
            token_grid(shape[1], ctx.spatial_size, ctx.options.get("prefix_tokens"), layer, shape)
        except SaliencyError as exc:
            raise SaliencyError(f"{exc}{_readable_hint(ctx, layer)}") from None
    grid = read_grid(shape, ctx.spatial_size, last, ctx.options.get("prefix_tokens"))
    if grid is None:
        raise SaliencyError(
            f"Layer {layer!r} outputs shape {shape}; a CAM needs a feature map {wanted} or transformer tokens "
            "(B, N, C). Pick a layer before the flattening or pooling (or leave layer=None), or pass reshape=f "
            f"returning {wanted}.{_readable_hint(ctx, layer)}"
        )
    return to_channels_first(ops, tensor, grid)


def check_rows(ctx: RunContext, tensor: Any, rows: int, layer: str) -> None:
    """A layer output whose first axis is not the images (windows, heads) cannot be read as their grid."""
    if ctx.options.get("reshape") is None and int(tensor.shape[0]) != rows:
        raise SaliencyError(
            f"Layer {layer!r} outputs shape {tuple(int(d) for d in tensor.shape)} for {rows} image(s): its first "
            "axis is not the images (attention windows or heads), so it cannot be read as their grid."
            f"{_readable_hint(ctx, layer)}"
        )


def _readable_hint(ctx: RunContext, layer: str) -> str:
    """`` Try layer='...'`` naming the layer the automatic choice reads, when there is one."""
    try:
        other = _automatic_layer(ctx)
    except SaliencyError:
        return ""
    return "" if other == layer else f" Layer {other!r} can be read as a grid: try layer={other!r} (or layer=None)."


def _layer_shapes(ctx: RunContext) -> list[tuple[str, tuple]]:
    """(name, output shape) of every layer, recorded on two copies of image 0 (``_SHAPE_ROWS`` rows)."""
    if "layer_shapes" not in ctx.cache:
        ops = ctx.ops
        ctx.cache["layer_shapes"] = ctx.backend.layer_shapes([ops.concat([x[:1]] * _SHAPE_ROWS) for x in ctx.inputs])
    return ctx.cache["layer_shapes"]


def _grid_layers(ctx: RunContext) -> list[tuple[str, Grid]]:
    return grid_layers(_layer_shapes(ctx), ctx.spatial_size, _channels_last_layers(ctx), _SHAPE_ROWS)


def _automatic_layer(ctx: RunContext, label: str = "A CAM") -> str:
    """The layer a CAM reads when none is given (see the module docstring), remembered per model and shapes."""
    shapes = tuple(x.shape[1:] for x in ctx.host_inputs)
    remembered = _AUTO_LAYERS.get(ctx.backend.model, shapes)
    if remembered is not None and remembered in ctx.backend.layer_names():
        return remembered
    last = _channels_last_layers(ctx)
    candidates = _grid_layers(ctx)
    if not candidates:
        raise SaliencyError(
            f"No layer of this model outputs a spatial feature map {'(B, h, w, C)' if last else '(B, C, h, w)'}, "
            f"so {label} cannot pick one. Pass layer= (a transformer's token layer is folded into a grid; "
            "see reshape= for other layouts)."
        )
    name, grid = candidates[-1]
    # Tokens, or a feature map on a branch that feeds no explained output (UperNet's auxiliary_head feeds only
    # the training loss; one probe finds it): the last layer that reaches the score.
    if grid.layout != ("channels_last" if last else "channels_first") or not _reaches(ctx, name):
        name = _last_reaching_layer(ctx, [n for n, _ in candidates]) or name
    _AUTO_LAYERS.put(ctx.backend.model, shapes, name)
    return name


def _last_reaching_layer(ctx: RunContext, names: list[str]) -> str | None:
    """Walking back in call order, the first layer whose map the score reaches (image 0, a probe each).

    A block that does not reach it (a ViT's last block, whose patch tokens the
    class token's head never reads) is followed by its own first layer: the
    block's input norm, which its attention mixes into the class token. Its
    other sublayers are then ruled out; a torch ``Sequential`` is skipped (its
    output is its last child's).
    """
    ruled_out: list[str] = []
    probes = 0
    for position in range(len(names) - 1, -1, -1):
        name = names[position]
        if any(name.startswith(r + ".") for r in ruled_out) or _is_sequence(ctx, name):
            continue
        first = next((n for n in names if n.startswith(name + ".")), None)
        for tried in (name, first):
            if tried is None or probes >= _AUTO_TRIES:
                continue
            probes += 1
            if _reaches(ctx, tried):
                return tried
        ruled_out.append(name)
    return None


def _reaches(ctx: RunContext, layer: str) -> bool:
    """Whether the score's gradient is non-zero somewhere on ``layer``'s grid, for image 0."""
    try:
        _, reach = GRADCAM._probe(ctx, layer)
    except SaliencyError:
        return False
    return float(ctx.ops.numpy(reach)[0]) > 0


class _AutoLayerMemo:
    """The automatic layer per model and input shapes, so a panel's recomputations skip the probing pass
    (an entry whose layer name is gone is not used)."""

    def __init__(self, size: int = 16):
        self._models = OwnerCache(size)

    def get(self, model: Any, shapes: tuple) -> str | None:
        return self._models.get(model, {}).get(shapes)

    def put(self, model: Any, shapes: tuple, name: str) -> None:
        names = self._models.get(model)
        if names is None:
            names = {}
            if not self._models.put(model, names):
                return
        names[shapes] = name


_AUTO_LAYERS = _AutoLayerMemo()


def _is_sequence(ctx: RunContext, name: str) -> bool:
    """Whether ``name`` is a torch ``nn.Sequential`` (a container whose output is its last child's)."""
    if ctx.backend.framework != "torch":
        return False
    import torch

    return isinstance(dict(ctx.backend.model.named_modules()).get(name), torch.nn.Sequential)


@dataclass
class CamState:
    maps: Any = None  # (B, h, w) device tensor, filled as chunks finish
    reach: Any = None  # (B,) largest |gradient| on the folded feature map: 0 where the layer cannot reach the score
    done: int = 0


class ClassActivationMap(Method):
    """What the four CAMs share: the layer, folding tokens, the zero-map check."""

    reads = "layer"
    output = "layer"
    signed = False
    options = (RESHAPE, PREFIX_TOKENS)

    def single_pass(self, options: dict) -> bool:
        return True  # one layer-gradient pass per clean image (Score-CAM overrides)

    def resolve(self, given: dict) -> dict:
        options = super().resolve(given)
        if options["reshape"] is not None and not callable(options["reshape"]):
            raise SaliencyError(
                f"reshape must be a function from the layer's output to a feature map; got {options['reshape']!r}."
            )
        return options

    def pick_layer(self, ctx: RunContext, layer: Any) -> str:
        if ctx.spatial_size is None:
            raise SaliencyError(
                f"{self.label} needs images as input 0, (B, C, H, W) or (B, H, W, C); got shape "
                f"{ctx.host_inputs[0].shape}. Use a gradient method for other inputs."
            )
        if layer is not None:
            return ctx.backend.layer_name(layer)
        return _automatic_layer(ctx, self.label)

    # --- what each CAM defines ---------------------------------------------------
    def combine(self, ops, activation, gradient):
        """The map before its ReLU, (B, h, w), from (B, C, h, w) activation and gradient."""
        raise NotImplementedError

    # --- the run ---------------------------------------------------------------
    def start(self, ctx: RunContext, resume: Any = None) -> CamState:
        return CamState()

    def passes_left(self, ctx: RunContext, state: CamState) -> int:
        return ctx.batch - state.done

    def stages(self, ctx: RunContext, state: CamState) -> Iterator[Stage]:
        if self.passes_left(ctx, state) > 0:
            yield Stage(ctx.batch, lambda start, stop: self._run_chunk(ctx, state, start, stop))

    def _layer_map(self, ctx: RunContext, points: list, images: np.ndarray, layer: str, observe: bool = True):
        """(maps (n, h, w), largest |gradient| per image) at ``layer``; ``observe=False`` for a probe (its
        outputs are not the clean pass's)."""
        activation, gradient, _ = ctx.layer_gradients(points, images, layer, observe)
        check_rows(ctx, activation, len(images), layer)
        a, g = feature_map(ctx, activation, layer), feature_map(ctx, gradient, layer)
        return ctx.ops.relu(self.combine(ctx.ops, a, g)), ctx.ops.row_abs_max(g)

    def _run_chunk(self, ctx: RunContext, state: CamState, start: int, stop: int) -> None:
        ops, images = ctx.ops, np.arange(start, stop)
        maps, reach = self._layer_map(ctx, [x[start:stop] for x in ctx.inputs], images, ctx.layer)
        if start == 0 and stop == ctx.batch:  # the whole batch in one chunk: its maps are the result
            state.maps, state.reach, state.done = maps, reach, stop
            return
        if state.maps is None:
            state.maps, state.reach = ops.zeros((ctx.batch, *tuple(maps.shape[1:]))), ops.zeros((ctx.batch,))
        state.maps = ops.put(state.maps, images, maps)
        state.reach = ops.put(state.reach, images, reach)
        state.done += stop - start

    def preview(self, ctx: RunContext, state: CamState) -> MethodOutput:
        return MethodOutput(state.maps, 0)

    def finish(self, ctx: RunContext, state: CamState) -> MethodOutput:
        ops = ctx.ops  # the reach and each map's peak cross to the host together
        reach, peaks = np.split(ops.numpy(ops.concat([ops.wide(state.reach), ops.wide(ops.row_max(state.maps))])), 2)
        if not (reach > 0).any():
            raise SaliencyError(self._unreachable_message(ctx))
        return self._checked(ctx, state.maps, peaks)

    # --- zero maps -----------------------------------------------------------------------
    def _checked(self, ctx: RunContext, maps, peaks: np.ndarray | None = None) -> MethodOutput:
        """The maps, with ``extras['zero_maps']`` and a warning for images whose map is zero (``peaks``:
        each map's largest value, when already on the host)."""
        peaks = ctx.ops.numpy(ctx.ops.row_max(maps)) if peaks is None else peaks
        zero = np.nonzero(~(peaks > 0))[0]
        extras = {}
        if len(zero):
            extras["zero_maps"] = zero.tolist()
            warnings.warn(
                f"{self.label} at layer {ctx.layer!r} is zero for image(s) {zero.tolist()}: no positive evidence "
                "for their class at that layer (the class may not be in the picture).", stacklevel=3,
            )
        return MethodOutput(maps, 0, extras)

    def _unreachable_message(self, ctx: RunContext) -> str:
        bound = ctx.explained.get(ctx.output_index)
        if getattr(bound.target if bound is not None else None, "score", "logit") != "logit":
            return (
                f"{self.label} at layer {ctx.layer!r} is zero for every image: the gradient of the target's "
                f"{bound.target.score} vanishes there. A confident probability is flat (its gradient underflows "
                "to zero): explain the raw score instead (score='logit', or target=k for a class)."
            )
        suggestion = self._earlier_layer(ctx)
        advice = (f"Try layer={suggestion!r}: its {self.label} map is not zero." if suggestion is not None
                  else "Try an earlier layer (layer=...).")
        return (
            f"{self.label} at layer {ctx.layer!r} is zero for every image: the target score does not depend on "
            "any position of that layer's map (its gradient there is zero). In a Vision Transformer whose head "
            f"reads only the class token, the last block's patch tokens do not reach the score. {advice}"
        )

    def _earlier_layer(self, ctx: RunContext) -> str | None:
        """The nearest layer called before ``ctx.layer`` whose map (for image 0) is not zero.

        Walking back in call order, a layer that fails rules out its own
        sublayers, so the suggestion is a sibling (the previous block) before
        it is a piece of one. A torch ``Sequential`` is skipped, not probed:
        its output is its last child's, and ruling out all its children would
        skip every block of a transformer's ``blocks``.
        """
        try:
            shapes = _layer_shapes(ctx)
        except SaliencyError:
            return None
        names = [name for name, _ in shapes]
        if ctx.layer not in names:
            return None
        position = len(names) - 1 - names[::-1].index(ctx.layer)
        ruled_out = [ctx.layer]
        tried, seen = 0, set()
        readable = {name for name, _ in _grid_layers(ctx)}
        for name, shape in reversed(shapes[:position]):
            if name in seen or any(name.startswith(r + ".") for r in ruled_out) or name not in readable:
                continue
            seen.add(name)
            if _is_sequence(ctx, name):
                continue
            tried += 1
            try:
                maps, _ = self._probe(ctx, name)
            except SaliencyError:
                maps = None
            if maps is not None and float(ctx.ops.numpy(ctx.ops.row_max(maps))[0]) > 0:
                return name
            ruled_out.append(name)
            if tried >= _SUGGESTION_TRIES:
                break
        return None

    def _probe(self, ctx: RunContext, layer: str):
        """The map of image 0 at ``layer`` and its gradient's reach (one forward+backward pass)."""
        return self._layer_map(ctx, [x[:1] for x in ctx.inputs], np.zeros(1, np.int64), layer, observe=False)


class GradCAM(ClassActivationMap):
    name = "gradcam"
    order = 70
    label = "Grad-CAM"
    summary = ("A layer's channels weighted by their spatially averaged gradient, positive part "
               "(Selvaraju et al. 2017).")

    def combine(self, ops, activation, gradient):
        weights = ops.mean(gradient, axis=(2, 3), keepdims=True)
        return ops.sum(weights * activation, axis=1)


class GradCAMPlusPlus(ClassActivationMap):
    name = "gradcampp"
    order = 71
    label = "Grad-CAM++"
    summary = ("Grad-CAM with channel weights from positive gradients and second/third-power terms "
               "(Chattopadhay et al. 2018, pytorch-grad-cam's closed form).")

    def combine(self, ops, activation, gradient):
        square = gradient * gradient
        cube = square * gradient
        total = ops.sum(activation, axis=(2, 3), keepdims=True)
        alpha = square / (2 * square + total * cube + 1e-6)
        alpha = ops.where(gradient != 0, alpha, 0.0)
        weights = ops.sum(ops.relu(gradient) * alpha, axis=(2, 3), keepdims=True)
        return ops.sum(weights * activation, axis=1)


class LayerCAM(ClassActivationMap):
    name = "layercam"
    order = 72
    label = "LayerCAM"
    summary = "Each position's activations weighted by their own positive gradient (Jiang et al. 2021)."

    def combine(self, ops, activation, gradient):
        return ops.sum(ops.relu(gradient) * activation, axis=1)


@dataclass
class ScoreState:
    flat: Any  # (C * B, h, w): channel k of image b at row k * B + b
    scores: Any  # (C * B,) target scores of the masked inputs, -inf where not yet run
    channels: int
    rows: np.ndarray  # the rows that get a masked pass of their own (not constant), channel-major
    blank_images: np.ndarray  # images with constant channels: one pass each, input 0 masked by zeros
    constant_rows: dict  # image -> its constant channels' rows, which share that pass's score
    done: int = 0

    @property
    def passes(self) -> int:
        return len(self.blank_images) + len(self.rows)


class ScoreCAM(ClassActivationMap):
    """Score-CAM, one forward pass per channel and image.

    A channel that is constant on an image (a ReLU's dead channel: half of
    EfficientNet-Lite0's last feature map) has the mask 0 whatever its value,
    so all such channels of an image share one pass: the input masked by zeros.
    The weights are exactly those of running every channel (where references
    upsample a constant, float rounding can leave it not quite constant and
    their normalisation then blows that up; mathematically the mask is 0).
    """

    name = "scorecam"
    order = 73
    label = "Score-CAM"

    def single_pass(self, options: dict) -> bool:
        return False
    summary = ("Channels weighted by a softmax of the class score when the input is masked by each channel "
               "(Wang et al. 2020); one forward pass per channel, no gradients.")

    def _layer_map(self, ctx: RunContext, points: list, images: np.ndarray, layer: str, observe: bool = True):
        # A probe for another layer uses Grad-CAM's gradient weights: one pass instead of one per channel.
        return GRADCAM._layer_map(ctx, points, images, layer, observe)

    def start(self, ctx: RunContext, resume: Any = None) -> ScoreState:
        ops, batch = ctx.ops, ctx.batch
        parts = []
        for s in range(0, batch, ctx.chunk):  # forward passes only: cheap next to the masked ones
            points = [x[s : s + ctx.chunk] for x in ctx.inputs]
            activation, _ = ctx.backend.layer_activations(points, ctx.layer)
            check_rows(ctx, activation, int(points[0].shape[0]), ctx.layer)
            parts.append(feature_map(ctx, activation, ctx.layer))
        a = ops.concat(parts)
        channels, h, w = (int(d) for d in a.shape[1:])
        flat = ops.reshape(ops.transpose(a, (1, 0, 2, 3)), (channels * batch, h, w))
        constant = ops.numpy(ops.row_max(flat) == ops.row_min(flat))
        images = np.arange(channels * batch) % batch
        constant_rows = {b: np.nonzero(constant & (images == b))[0] for b in range(batch)}
        blank = np.array([b for b in range(batch) if len(constant_rows[b])], np.int64)
        return ScoreState(flat, ops.full((channels * batch,), -np.inf), channels, np.nonzero(~constant)[0],
                          blank, constant_rows)

    def passes_left(self, ctx: RunContext, state: ScoreState) -> int:
        return state.passes - state.done

    def stages(self, ctx: RunContext, state: ScoreState) -> Iterator[Stage]:
        if self.passes_left(ctx, state) > 0:
            yield Stage(state.passes, lambda start, stop: self._run_masked(ctx, state, start, stop), cost=FORWARD_COST)

    def _run_masked(self, ctx: RunContext, state: ScoreState, start: int, stop: int) -> None:
        """Passes ``start..stop-1``: first one per image with constant channels, then one per other row."""
        ops, batch = ctx.ops, ctx.batch
        height, width = ctx.spatial_size
        picks = np.arange(start, stop)
        blanks = state.blank_images[picks[picks < len(state.blank_images)]]
        rows = state.rows[picks[picks >= len(state.blank_images)] - len(state.blank_images)]
        images = np.concatenate([blanks, rows % batch])
        masks = []
        if len(blanks):
            masks.append(ops.zeros((len(blanks), height, width)))
        if len(rows):
            resized = ops.resize(ops.take(state.flat, rows), (height, width))
            low = ops.per_row(ops.row_min(resized), resized)
            high = ops.per_row(ops.row_max(resized), resized)
            masks.append((resized - low) / (high - low + 1e-8))
        shape = (len(images), height, width, 1) if ctx.channels_last else (len(images), 1, height, width)
        points = [ops.take(ctx.inputs[0], images) * ops.reshape(ops.concat(masks), shape)]
        points += [ops.take(x, images) for x in ctx.inputs[1:]]
        scores = ctx.target_scores(ctx.backend.outputs(points), images)
        if len(rows):
            state.scores = ops.put(state.scores, rows, scores[len(blanks):])
        for i, image in enumerate(blanks.tolist()):
            shared = state.constant_rows[image]
            state.scores = ops.put(state.scores, shared, ops.take(scores, np.full(len(shared), i)))
        state.done += stop - start

    def _maps(self, ctx: RunContext, state: ScoreState):
        ops = ctx.ops
        batch, channels = ctx.batch, state.channels
        weights = ops.softmax(ops.transpose(ops.reshape(state.scores, (channels, batch)), (1, 0)), axis=1)
        weights = ops.where(weights == weights, weights, 0.0)  # a preview's images with no channel run yet
        h, w = (int(d) for d in state.flat.shape[1:])
        per_channel = ops.reshape(state.flat, (channels, batch, h, w))
        column = ops.reshape(ops.transpose(weights, (1, 0)), (channels, batch, 1, 1))
        return ops.relu(ops.sum(column * per_channel, axis=0))

    def preview(self, ctx: RunContext, state: ScoreState) -> MethodOutput:
        return MethodOutput(self._maps(ctx, state), 0)

    def finish(self, ctx: RunContext, state: ScoreState) -> MethodOutput:
        return self._checked(ctx, self._maps(ctx, state))


GRADCAM = register(GradCAM())
GRADCAMPP = register(GradCAMPlusPlus())
LAYERCAM = register(LayerCAM())
SCORECAM = register(ScoreCAM())
# The further CAMs (EigenCAM, HiResCAM, XGradCAM) live in cam_more.py and register themselves there.
