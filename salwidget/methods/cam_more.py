"""HiResCAM, XGradCAM and EigenCAM beside the CAMs of :mod:`~salwidget.methods.cam`.

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
=========  ==============================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import RunContext, register
from .cam import ClassActivationMap, _check_rows, feature_map


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
        _check_rows(ctx, activation, len(images), layer)
        projection = first_component_projection(ops.numpy(feature_map(ctx, activation, layer)))
        maps = ops.relu(ops.asarray(projection))
        return maps, ops.asarray(np.ones(len(images), np.float32))  # no gradient: every layer "reaches"

    def stages(self, ctx: RunContext, state: Any):
        for stage in super().stages(ctx, state):
            stage.cost = 1.0 / 3.0  # a forward pass
            yield stage


HIRESCAM = register(HiResCAM())
XGRADCAM = register(XGradCAM())
EIGENCAM = register(EigenCAM())
