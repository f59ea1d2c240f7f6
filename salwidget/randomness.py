"""Seeded random draws for noise, random baselines and random path positions.

Every draw is keyed by ``(seed, stream, input, sample)`` and covers the whole
batch of images at once: image ``i`` takes row ``i``. A key seeds a
counter-based generator on the model's device (torch's generator re-seeded,
TensorFlow's stateless Philox), so draws do not depend on how the passes are
chunked and the same seed gives the same numbers again in the same framework
on the same kind of device (and the same batch size). Noise on the device is
drawn in blocks of whole samples keyed by ``(seed, stream, input, block)``
(about :data:`BLOCK_PASSES` passes each): one generator call serves several
samples, and a chunk takes its passes' numbers as one span of the blocks
(:meth:`Draws.normal_span`), so a chunk's cost in operations does not grow with
its samples. With ``image_ids`` each image's draws are keyed by its id instead. ``rng="numpy"`` draws on the host instead, per
``(seed, stream, input, image, sample)`` in channels-last order: the same
numbers in torch and TensorFlow (slower; for cross-framework checks).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import chunk_tuning
from .errors import SaliencyError

NOISE, BASELINE, REFERENCE, POSITION = 1, 2, 3, 4
RNG_MODES = ("device", "numpy")
# Device noise is drawn in blocks of whole samples, about this many passes each (one generator call per
# block, not per sample); a sample's numbers depend on the seed, the batch size, the sample and the kind
# of device only. A CPU's chunks are a few passes (a larger block would draw numbers no chunk uses); an
# accelerator's are hundreds, and a block of 8 would cost a draw and a slice per 8 of them.
BLOCK_PASSES = 8
ACCELERATOR_BLOCK_PASSES = 128
_BLOCKS = 100  # offsets a block's stream from the per-sample streams' keys


def derive_key(seed: int, stream: int, input_index: int, sample: int, image: int | None = None) -> int:
    """A 63-bit generator seed for one draw (well mixed by numpy's SeedSequence); ``image`` keys a draw of
    one image by its id (a dataset index) instead of the whole batch's."""
    entropy = [int(seed), stream, input_index, int(sample)] + ([] if image is None else [int(image), 1])
    words = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
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

    def __init__(self, ops: Any, shapes: Sequence[tuple], seed: int, rng: str, channels_last: bool,
                 image_ids: Sequence[int] | None = None):
        self.ops, self.shapes, self.seed = ops, [tuple(s) for s in shapes], int(seed)
        self.rng, self.channels_last = check_rng(rng), channels_last
        # Time spent drawing noise blocks, which serve the chunks after the one that draws them: the chunk
        # tuner leaves it out of a chunk's time (a CPU's draws are synchronous; tuning runs on CPUs only).
        self.block_seconds = 0.0
        # With ids (dataset indices), each image's numbers are keyed by its id, not its row: the same image
        # gets the same noise in any batch, on any worker.
        self.image_ids = None if image_ids is None else [int(i) for i in image_ids]
        if self.image_ids is not None and len(self.image_ids) != self.shapes[0][0]:
            raise SaliencyError(f"image_ids has {len(self.image_ids)} ids for {self.shapes[0][0]} images.")

    def normal(self, stream: int, input_index: int, sample: int):
        """(B, ...) standard normal numbers for one sample of one input."""
        if self.blocked():
            return self.normal_span(stream, input_index, sample * self.shapes[0][0], (sample + 1) * self.shapes[0][0])
        return self._draw(stream, input_index, sample, normal=True)

    def blocked(self) -> bool:
        """Whether noise comes in device blocks of whole samples (:meth:`normal_span`)."""
        return self.rng == "device" and self.image_ids is None

    def block_samples(self) -> int:
        """Samples per device block: about :data:`BLOCK_PASSES` passes on a CPU (:data:`ACCELERATOR_BLOCK_PASSES`
        on a GPU), at least one sample."""
        device = getattr(getattr(self.ops, "device", None), "type", "cpu")  # torch's; other backends: a CPU's
        passes = BLOCK_PASSES if device == "cpu" else ACCELERATOR_BLOCK_PASSES
        return max(1, passes // self.shapes[0][0])

    def normal_span(self, stream: int, input_index: int, start: int, stop: int):
        """Standard normal numbers for passes [start, stop) of the sample-major stream (pass ``p`` is image
        ``p % B`` of sample ``p // B``): one tensor whatever the span, from one generator call per block of
        :meth:`block_samples` samples (the last block drawn is kept for the next span). Only for
        ``rng='device'`` without image ids."""
        batch, ops = self.shapes[0][0], self.ops
        per_block = self.block_samples() * batch
        parts = []
        for block in range(start // per_block, (stop - 1) // per_block + 1):
            drawn = self._block(stream, input_index, block, per_block)
            lo, hi = max(start - block * per_block, 0), min(stop - block * per_block, per_block)
            parts.append(drawn if (lo, hi) == (0, per_block) else drawn[lo:hi])
        return ops.concat(parts)

    def _block(self, stream: int, m: int, block: int, rows: int):
        held = getattr(self, "_held", {})
        self._held = held
        key = (stream, m)
        if key not in held or held[key][0] != block:
            shape = (rows,) + tuple(self.shapes[m][1:])
            began = chunk_tuning.clock()
            held[key] = (block, self.ops.normal(shape, derive_key(self.seed, _BLOCKS + stream, m, block)))
            self.block_seconds += chunk_tuning.clock() - began
        return held[key][1]

    def uniform(self, stream: int, input_index: int, sample: int):
        """(B, ...) uniform numbers in [0, 1) for one sample of one input."""
        return self._draw(stream, input_index, sample, normal=False)

    def vector(self, stream: int, sample: int, length: int) -> np.ndarray:
        """``length`` uniform numbers in [0, 1) on the host (positions, choices); with image ids and a
        length of whole images, each image's share is keyed by its id."""
        ids = self.image_ids
        if ids is not None and length % len(ids) == 0:
            per = length // len(ids)
            return np.concatenate([np.random.default_rng([self.seed, stream, int(sample), i, 1]).random(per)
                                   for i in ids])
        return np.random.default_rng([self.seed, stream, int(sample)]).random(length)

    def _draw(self, stream: int, m: int, sample: int, normal: bool):
        shape = self.shapes[m]
        if self.rng == "device":
            if self.image_ids is not None:  # one draw per image, keyed by its id
                one = (1,) + tuple(shape[1:])
                draw = self.ops.normal if normal else self.ops.uniform
                return self.ops.concat([draw(one, derive_key(self.seed, stream, m, sample, i)) for i in self.image_ids])
            key = derive_key(self.seed, stream, m, sample)
            return self.ops.normal(shape, key) if normal else self.ops.uniform(shape, key)
        image_shape = shape[1:]
        moved = len(image_shape) == 3 and not self.channels_last
        draw_shape = image_shape[1:] + image_shape[:1] if moved else image_shape
        rows = []
        for i in (range(shape[0]) if self.image_ids is None else self.image_ids):
            generator = np.random.default_rng([self.seed, stream, m, i, int(sample)])
            row = generator.standard_normal(draw_shape, np.float32) if normal else generator.random(draw_shape, np.float32)
            rows.append(np.moveaxis(row, -1, 0) if moved else row)
        return self.ops.asarray(np.stack(rows))
