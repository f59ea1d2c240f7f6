"""salwidget against Captum on the same torch CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import salwidget as sw

import captum.attr as captum_attr  # noqa: E402  (a test dependency: a missing one must fail, not skip)


def test_vanilla_matches_captum_saliency_without_abs(torch_cnn, images):
    ours = sw.attribute(torch_cnn, images, "vanilla", target=[0, 1, 2, 3])
    theirs = captum_attr.Saliency(torch_cnn).attribute(
        torch.from_numpy(images).requires_grad_(), target=[0, 1, 2, 3], abs=False
    )
    np.testing.assert_allclose(ours.raw, theirs.detach().numpy(), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("steps", [5, 32])
def test_integrated_matches_captum_with_the_same_quadrature(torch_cnn, images, steps):
    # Captum's riemann_trapezoid weights are 1/n with halved ends: they sum to
    # (n - 1) / n, not 1, so its maps are ours scaled by (n - 1) / n.
    baseline = np.full_like(images, 0.25)
    ours = sw.attribute(torch_cnn, images, "integrated", target=1, nsamples=steps, baseline=baseline,
                        quadrature="trapezoid", batch_size=7)
    theirs, delta = captum_attr.IntegratedGradients(torch_cnn).attribute(
        torch.from_numpy(images), baselines=torch.from_numpy(baseline), target=1, n_steps=steps,
        method="riemann_trapezoid", return_convergence_delta=True,
    )
    np.testing.assert_allclose(ours.raw * (steps - 1) / steps, theirs.numpy(), rtol=1e-4, atol=1e-7)
    # Captum's delta is sum(theirs) - (f(x) - f(b)): recover f(x) - f(b) and check ours against it.
    gain = theirs.numpy().reshape(4, -1).sum(1) - delta.numpy()
    np.testing.assert_allclose(ours.delta, ours.raw.reshape(4, -1).sum(1) - gain, rtol=1e-3, atol=1e-5)


def test_integrated_converges_to_captum_gauss_legendre(torch_cnn, images):
    ours = sw.attribute(torch_cnn, images, "integrated", target=2, nsamples=200, baseline=0.0)
    theirs = captum_attr.IntegratedGradients(torch_cnn).attribute(
        torch.from_numpy(images), baselines=0.0, target=2, n_steps=50
    )
    np.testing.assert_allclose(ours.raw, theirs.numpy(), rtol=0.02, atol=2e-4 * np.abs(theirs.numpy()).max())
