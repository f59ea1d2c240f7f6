"""Seeded random draws for noise, random baselines and random path positions.

Every draw is keyed by ``(seed, stream, input, sample)`` and covers the whole
batch of images at once: image ``i`` takes row ``i``. A key seeds a
counter-based generator on the model's device (torch's generator re-seeded,
TensorFlow's stateless Philox), so draws do not depend on how the passes are
chunked and the same seed gives the same numbers again in the same framework
on the same kind of device. ``rng="numpy"`` draws on the host instead, per
``(seed, stream, input, image, sample)`` in channels-last order: the same
numbers in torch and TensorFlow (slower; for cross-framework checks).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import SaliencyError

NOISE, BASELINE, REFERENCE, POSITION = 1, 2, 3, 4
RNG_MODES = ("device", "numpy")


def derive_key(seed: int, stream: int, input_index: int, sample: int) -> int:
    """A 63-bit generator seed for one draw (well mixed by numpy's SeedSequence)."""
    words = np.random.SeedSequence([int(seed), stream, input_index, int(sample)]).generate_state(2, np.uint32)
    return (int(words[0]) << 31 | int(words[1]) >> 1) & (2**63 - 1)


def check_rng(rng: str) -> str:
    if rng not in RNG_MODES:
        raise SaliencyError(f"Unknown rng {rng!r}; use 'device' (fast, the default) or 'numpy' (portable).")
    return rng


class Draws:
    """The random numbers of one computation.

    Parameters
    ----------
    ops : Ops
        The backend's arithmetic (where device draws happen).
    shapes : sequence of tuple
        Each input's full shape (B, ...).
    seed : int
    rng : {'device', 'numpy'}
    channels_last : bool
        Layout of image inputs; numpy draws are made channels last and moved.
    """

    def __init__(self, ops: Any, shapes: Sequence[tuple], seed: int, rng: str, channels_last: bool):
        self.ops, self.shapes, self.seed = ops, [tuple(s) for s in shapes], int(seed)
        self.rng, self.channels_last = check_rng(rng), channels_last

    def normal(self, stream: int, input_index: int, sample: int):
        """(B, ...) standard normal numbers for one sample of one input."""
        return self._draw(stream, input_index, sample, normal=True)

    def uniform(self, stream: int, input_index: int, sample: int):
        """(B, ...) uniform numbers in [0, 1) for one sample of one input."""
        return self._draw(stream, input_index, sample, normal=False)

    def vector(self, stream: int, sample: int, length: int) -> np.ndarray:
        """``length`` uniform numbers in [0, 1) on the host (positions, choices)."""
        return np.random.default_rng([self.seed, stream, int(sample)]).random(length)

    def _draw(self, stream: int, m: int, sample: int, normal: bool):
        shape = self.shapes[m]
        if self.rng == "device":
            key = derive_key(self.seed, stream, m, sample)
            return self.ops.normal(shape, key) if normal else self.ops.uniform(shape, key)
        image_shape = shape[1:]
        moved = len(image_shape) == 3 and not self.channels_last
        draw_shape = image_shape[1:] + image_shape[:1] if moved else image_shape
        rows = []
        for i in range(shape[0]):
            generator = np.random.default_rng([self.seed, stream, m, i, int(sample)])
            row = generator.standard_normal(draw_shape, np.float32) if normal else generator.random(draw_shape, np.float32)
            rows.append(np.moveaxis(row, -1, 0) if moved else row)
        return self.ops.asarray(np.stack(rows))
