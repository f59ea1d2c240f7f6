"""HiResCAM, XGradCAM, EigenCAM and AblationCAM beside the CAMs of :mod:`~salwidget.methods.cam`.

Same layer (``layer=``, the automatic layer, token grids, ``reshape=``) and
the same raw result: the positive part of a map at the layer's resolution.
With ``A`` the layer's activation and ``g`` the score's gradient there:

=========  ==============================================================
hirescam   ``ReLU(sum_k g_k * A_k)`` per position (Draelos and Carin 2020;
           as pytorch-grad-cam's HiResCAM).
xgradcam   ``ReLU(sum_k w_k A_k)``, ``w_k = sum_ij g_kij A_kij / (sum_ij
           A_kij + 1e-7)`` (Fu et al. 2020; as pytorch-grad-cam's XGradCAM).
eigencam   ``ReLU(P)``, ``P`` the projection of each position's centred
           activation vector on the first right singular vector of the
           (h*w, C) matrix of centred activations (Muhammad and Yeasin 2020;
           as pytorch-grad-cam's EigenCAM). Gradient-free: one forward pass
           per image; the target class does not change it. A singular
           vector's sign is arbitrary (pytorch-grad-cam's map depends on
           LAPACK's choice): salwidget flips ``P`` when ``|min P| > |max P|``,
           the correction of Seg-Eigen-CAM (Chung and Ying 2025, eq. 13;
           pytorch-grad-cam's ``get_2d_projection_with_sign_correction``).
           The SVD runs on the host in float32 (numpy, as pytorch-grad-cam):
           the matrices are (h*w, C), small next to the forward pass.
ablationcam
           ``ReLU(sum_k w_k A_k)``, ``w_k = (S - S_k) / S`` with ``S_k`` the
           target's score when channel ``k`` of the layer is ablated (Desai and
           Ramaswamy 2020; as pytorch-grad-cam's AblationCAM): one forward pass
           per channel and image, run in chunks by the engine. The ablated
           channel is set to 0 when the image's activation at the layer has
           minimum 0 (after a ReLU), else to that minimum - 1e7
           (pytorch-grad-cam lowers that value again for each further channel
           of a chunk; salwidget uses the first). Keras: the same, the layer
           read as (B, h, w, C), on a twin spliced at the layer.
=========  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SaliencyError
from .base import MethodOutput, RunContext, Stage, register
from .cam import GRADCAM, ClassActivationMap, check_rows, feature_map


class HiResCAM(ClassActivationMap):
    name = "hirescam"
    order = 74
    label = "HiResCAM"
    summary = ("Each position's activations times their own gradient, summed over channels "
               "(Draelos and Carin 2020): Grad-CAM without averaging the gradient.")

    def combine(self, ops, activation, gradient):
        return ops.sum(gradient * activation, axis=1)


class XGradCAM(ClassActivationMap):
    name = "xgradcam"
    order = 75
    label = "XGradCAM"
    summary = ("Channels weighted by their gradient averaged with the activations' own weights "
               "(Fu et al. 2020).")

    def combine(self, ops, activation, gradient):
        total = ops.sum(activation, axis=(2, 3), keepdims=True)
        weights = ops.sum(gradient * activation / (total + 1e-7), axis=(2, 3), keepdims=True)
        return ops.sum(weights * activation, axis=1)


def first_component_projection(features: np.ndarray) -> np.ndarray:
    """(B, C, h, w) -> (B, h, w): each image's centred activations projected on their first principal
    direction, signed so that the larger magnitude is positive."""
    features = np.nan_to_num(np.asarray(features, np.float32))
    batch, channels, height, width = features.shape
    out = np.empty((batch, height, width), np.float32)
    for b in range(batch):
        matrix = features[b].reshape(channels, -1).T
        matrix = matrix - matrix.mean(axis=0)
        _, _, vt = np.linalg.svd(matrix, full_matrices=False)
        projection = (matrix @ vt[0]).reshape(height, width)
        if abs(projection.min()) > abs(projection.max()):
            projection = -projection
        out[b] = projection
    return out


class EigenCAM(ClassActivationMap):
    name = "eigencam"
    order = 76
    label = "EigenCAM"
    summary = ("The first principal component of a layer's activations (Muhammad and Yeasin 2020); "
               "no gradients, so it works where they do not reach (the same map for every class).")

    def single_pass(self, options: dict) -> bool:
        return False  # forward passes only: the engine takes targets from a pass of its own

    def _layer_map(self, ctx: RunContext, points: list, images: np.ndarray, layer: str, observe: bool = True):
        ops = ctx.ops
        activation, _ = ctx.backend.layer_activations(points, layer)
        check_rows(ctx, activation, len(images), layer)
        projection = first_component_projection(ops.numpy(feature_map(ctx, activation, layer)))
        maps = ops.relu(ops.asarray(projection))
        return maps, ops.asarray(np.ones(len(images), np.float32))  # no gradient: every layer "reaches"

    def stages(self, ctx: RunContext, state: Any):
        for stage in super().stages(ctx, state):
            stage.cost = 1.0 / 3.0  # a forward pass
            yield stage


@dataclass
class AblationState:
    activation: Any  # (B, C, h, w) in torch, (B, h, w, C) in Keras: the layer's own layout
    clean: Any  # (B,) target scores
    scores: Any  # (C * B,) ablated scores, channel-major
    channels: int
    done: int = 0


ABLATION_VALUE = 1e7


def _channels_last(ctx: RunContext) -> bool:
    return ctx.backend.framework == "tensorflow"  # Keras feature maps are (B, h, w, C)


def _per_channel(ctx: RunContext, rows: int, channels: int) -> tuple:
    """The shape of one value per row and channel, broadcast over a feature map of the layer's layout."""
    return (rows, 1, 1, channels) if _channels_last(ctx) else (rows, channels, 1, 1)


class AblationCAM(ClassActivationMap):
    name = "ablationcam"
    order = 77
    label = "AblationCAM"
    summary = ("Channels weighted by the relative drop of the class score when each is ablated (Desai and Ramaswamy "
               "2020); one forward pass per channel, no gradients.")

    def single_pass(self, options: dict) -> bool:
        return False

    def _layer_map(self, ctx: RunContext, points: list, images: np.ndarray, layer: str, observe: bool = True):
        return GRADCAM._layer_map(ctx, points, images, layer, observe)  # probes: one gradient pass, not C

    def start(self, ctx: RunContext, resume: Any = None) -> AblationState:
        if not hasattr(ctx.backend, "outputs_with_layer"):
            raise SaliencyError("AblationCAM needs a torch or Keras model (it replaces a layer's output); use "
                                "'scorecam' or 'gradcam'.")
        ops = ctx.ops
        parts, scores = [], []
        for s in range(0, ctx.batch, ctx.chunk):
            points = [x[s : s + ctx.chunk] for x in ctx.inputs]
            activation, outputs = ctx.backend.layer_activations(points, ctx.layer)
            if len(activation.shape) != 4 or ctx.options.get("reshape") is not None:
                wanted = "(B, h, w, C)" if _channels_last(ctx) else "(B, C, h, w)"
                raise SaliencyError(f"AblationCAM needs a {wanted} feature map at layer {ctx.layer!r}; got "
                                    f"shape {tuple(activation.shape)}.")
            check_rows(ctx, activation, int(points[0].shape[0]), ctx.layer)
            parts.append(activation)
            scores.append(ctx.target_scores(outputs, np.arange(s, s + int(points[0].shape[0]))))
        activation = ops.concat(parts)
        channels = int(activation.shape[-1 if _channels_last(ctx) else 1])
        return AblationState(activation, ops.concat(scores), ops.zeros((channels * ctx.batch,)), channels)

    def passes_left(self, ctx: RunContext, state: AblationState) -> int:
        return state.channels * ctx.batch - state.done

    def stages(self, ctx: RunContext, state: AblationState):
        if self.passes_left(ctx, state) > 0:
            yield Stage(state.channels * ctx.batch, lambda start, stop: self._run_ablated(ctx, state, start, stop),
                        cost=1.0 / 3.0)

    def _run_ablated(self, ctx: RunContext, state: AblationState, start: int, stop: int) -> None:
        ops, rows = ctx.ops, np.arange(start, stop)
        images, channels = rows % ctx.batch, rows // ctx.batch
        activation = ops.take(state.activation, images)
        low = ops.numpy(ops.row_min(activation)).astype(np.float64)
        value = np.where(low == 0, 0.0, low - ABLATION_VALUE)  # the row's activation dtype after the cast below
        keep = np.ones((len(rows), state.channels))
        keep[np.arange(len(rows)), channels] = 0
        shape = _per_channel(ctx, len(rows), state.channels)
        fill = ops.cast_like(ops.asarray(((1 - keep) * value[:, None]).reshape(shape)), activation)
        ablated = activation * ops.cast_like(ops.asarray(keep.reshape(shape)), activation) + fill

        def replace(output):
            return ops.cast_like(ablated, output)

        outputs = ctx.backend.outputs_with_layer([ops.take(x, images) for x in ctx.inputs], ctx.layer, replace)
        state.scores = ops.put(state.scores, rows, ctx.target_scores(outputs, images))
        state.done += stop - start

    def _maps(self, ctx: RunContext, state: AblationState):
        ops = ctx.ops
        scores = ops.transpose(ops.reshape(state.scores, (state.channels, ctx.batch)), (1, 0))  # (B, C)
        clean = ops.reshape(state.clean, (ctx.batch, 1))
        weights = ops.reshape((clean - scores) / clean, _per_channel(ctx, ctx.batch, state.channels))
        return ops.relu(ops.sum(weights * state.activation, axis=-1 if _channels_last(ctx) else 1))

    def preview(self, ctx: RunContext, state: AblationState) -> MethodOutput:
        return MethodOutput(self._maps(ctx, state), 0)

    def finish(self, ctx: RunContext, state: AblationState) -> MethodOutput:
        return self._checked(ctx, self._maps(ctx, state))


HIRESCAM = register(HiResCAM())
XGRADCAM = register(XGradCAM())
EIGENCAM = register(EigenCAM())
ABLATIONCAM = register(AblationCAM())
