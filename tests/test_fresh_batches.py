"""Forward-only copies come from a run's pooled blocks: never a block a model still holds."""

from __future__ import annotations

import numpy as np
import pytest

import salwidget as sw
from salwidget.backends.base import fresh_block

from .helpers import make_torch_cnn


def test_a_block_is_reused_only_when_nothing_references_it():
    import torch

    pool: list = []
    block = fresh_block(pool, (2, 3), np.float32)
    tensor = torch.from_numpy(block)
    del block
    assert fresh_block(pool, (2, 3), np.float32) is not pool[0]  # a tensor of it is alive
    view = tensor[1:]
    del tensor
    assert fresh_block(pool, (2, 3), np.float32) is not pool[0]  # a view of it is alive
    array = view.numpy()
    del view
    assert fresh_block(pool, (2, 3), np.float32) is not pool[0]  # an array sharing it is alive
    del array
    assert fresh_block(pool, (2, 3), np.float32) is pool[0]
    assert fresh_block(pool, (3, 3), np.float32) is not pool[0]  # another shape


class Keeper:
    """Wraps a model: keeps every batch it is given (and a view of it), with a copy made at call time."""

    def __init__(self, model, detached: bool = False):
        self.model, self.kept, self.detached = model, [], detached

    def module(self):
        import torch

        keeper = self

        class Kept(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = keeper.model

            def forward(self, x):
                held = x.detach() if keeper.detached else x  # detach(): a new tensor on the same memory, no _base
                keeper.kept.append((held, held[:, :1], x.detach().clone()))
                return self.inner(x)

        return Kept().eval()


@pytest.mark.parametrize("method, kwargs", [("occlusion", dict(window=4, stride=3)),
                                            ("rise", dict(nmasks=40, grid=4, seed=1)),
                                            ("rise", dict(nmasks=40, grid=4, seed=1, fill=0.5))])
@pytest.mark.parametrize("detached", [False, True])
def test_a_batch_a_model_keeps_is_never_rewritten(method, kwargs, detached):
    pictures = np.random.default_rng(5).uniform(0, 1, (2, 3, 16, 16)).astype(np.float32)
    plain = sw.attribute(make_torch_cnn(), pictures, method, target=[1, 2], batch_size=3, **kwargs)
    keeper = Keeper(make_torch_cnn(), detached)
    kept = sw.attribute(keeper.module(), pictures, method, target=[1, 2], batch_size=3, **kwargs)
    assert len(keeper.kept) > 3
    for batch, view, copy in keeper.kept:
        np.testing.assert_array_equal(batch.numpy(), copy.numpy())
        np.testing.assert_array_equal(view.numpy(), copy[:, :1].numpy())
    np.testing.assert_array_equal(kept.raw, plain.raw)
