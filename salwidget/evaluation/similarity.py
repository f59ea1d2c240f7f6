"""How alike two batches of saliency masks are: Spearman rank correlation and SSIM, in numpy.

Both compare image ``b`` of one batch with image ``b`` of the other and return
one number per image. Plain numpy keeps the core free of scipy and
scikit-image; the tests check both against those libraries.
"""

from __future__ import annotations

import numpy as np

from ..errors import SaliencyError

# scikit-image's structural_similarity defaults (Wang et al. 2004): a 7x7 uniform
# window, K1 = 0.01, K2 = 0.03, sample covariances.
SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03


def _check_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 3:
        raise SaliencyError(f"Expected two batches of masks of one shape (B, H, W); got {a.shape} and {b.shape}.")
    return a, b


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of each row of ``values`` (B, n), ties sharing their average rank."""
    values = np.asarray(values)
    ranks = np.empty(values.shape, np.float64)
    for row, v in enumerate(values):
        order = np.argsort(v, kind="stable")
        ordered = v[order]
        new_value = np.r_[True, ordered[1:] != ordered[:-1]]
        starts = np.flatnonzero(new_value)
        counts = np.diff(np.r_[starts, len(v)])
        group = np.cumsum(new_value) - 1
        ranks[row, order] = (starts + (counts + 1) / 2.0)[group]
    return ranks


def spearman(a, b) -> np.ndarray:
    """Spearman rank correlation of each pair of masks (average ranks for ties, as scipy).

    Parameters
    ----------
    a, b : array of shape (B, H, W)

    Returns
    -------
    numpy.ndarray of shape (B,), in [-1, 1]
        NaN for an image where either mask is constant (no ranking to compare).
    """
    a, b = _check_pair(a, b)
    ra, rb = average_ranks(a.reshape(len(a), -1)), average_ranks(b.reshape(len(b), -1))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    norm = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (ra * rb).sum(axis=1) / np.where(norm > 0, norm, 1), np.nan)


def _window_means(a: np.ndarray, width: int) -> np.ndarray:
    """Means over every ``width`` x ``width`` window that lies inside the image (B, H-w+1, W-w+1)."""
    table = np.pad(a, ((0, 0), (1, 0), (1, 0))).cumsum(axis=1).cumsum(axis=2)
    sums = table[:, width:, width:] - table[:, :-width, width:] - table[:, width:, :-width] + table[:, :-width, :-width]
    return sums / (width * width)


def ssim(a, b, data_range: float = 1.0) -> np.ndarray:
    """Mean structural similarity of each pair of masks.

    Equals ``skimage.metrics.structural_similarity(a[i], b[i], data_range=data_range)``
    with its defaults (7x7 uniform window, sample covariances, the mean over
    the windows that fit inside the image).

    Parameters
    ----------
    a, b : array of shape (B, H, W), H and W at least 7
    data_range : float, default 1.0
        The span of the values (greyscale masks are in [0, 1]).

    Returns
    -------
    numpy.ndarray of shape (B,), at most 1 (equal masks)
    """
    a, b = _check_pair(a, b)
    w = SSIM_WINDOW
    if min(a.shape[1:]) < w:
        raise SaliencyError(f"SSIM needs masks of at least {w}x{w} pixels; got {a.shape[1:]}. Use 'spearman'.")
    mean_a, mean_b = _window_means(a, w), _window_means(b, w)
    sample = w * w / (w * w - 1.0)
    var_a = sample * (_window_means(a * a, w) - mean_a * mean_a)
    var_b = sample * (_window_means(b * b, w) - mean_b * mean_b)
    cov = sample * (_window_means(a * b, w) - mean_a * mean_b)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    index = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
    return index.reshape(len(a), -1).mean(axis=1)


__all__ = ["average_ranks", "spearman", "ssim"]
