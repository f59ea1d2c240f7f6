"""``attribute_dataset(engine="ray")``: the same blocks, computed by Ray Data actors.

Each actor holds the model (one GPU each where the cluster has GPUs) and runs
:func:`salwidget.dataset.jobs.run_block` on the blocks it is given, writing
its own rows into the store (a folder every worker can reach: a local cluster
or a shared file system); nothing but row counts comes back to the driver.
The shape is Ray Data's batch inference: ``map_batches`` with a callable
class, ``compute=ActorPoolStrategy(size=...)``, an explicit ``batch_size``
(one block per call). The model and the data source are sent with the actors'
constructor (Ray puts large ones in its object store). Ray's progress bars and log lines are off; salwidget's ``progress``
counts committed rows. A block whose actor dies is run again by Ray; a job
interrupted anyhow leaves only whole blocks in the store, and a re-run
computes the rest.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

from ..errors import AttributionCancelled, SaliencyError

RAY_VERSION = "2.60.0"


def require_ray():
    try:
        import ray
    except ImportError as exc:
        raise SaliencyError(f"engine='ray' needs Ray: pip install 'salwidget[ray]' (ray[data]=={RAY_VERSION}).") from exc
    return ray


# Environment variables Ray reads when it starts; salwidget sets them only while it starts a cluster.
_STARTUP_VARIABLES = ("RAY_AUTH_MODE", "RAY_BACKEND_LOG_LEVEL")


def connect(address: str | None = None):
    """Ray, initialised: the cluster at ``address``, the one this process already joined, or a local one.

    A local cluster of salwidget's own uses Ray's token authentication (Ray's GCS server listens on every
    interface: without a token, whoever reaches its port could run code in the cluster); its token is
    Ray's own (``~/.ray/auth_token``, made if missing). A cluster at ``address`` is joined as the user
    configured it (their ``RAY_AUTH_MODE`` and token). Either way the process's environment is left as it
    was found: what Ray must read at start is set only for the start.
    """
    ray = require_ray()
    if not ray.is_initialized():
        found = {name: os.environ.get(name) for name in _STARTUP_VARIABLES}
        try:
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ log lines (actor restart notes)
            local = {}
            if not address:
                # Ray's own default for a new local cluster is token authentication (it makes the token and
                # sets the mode for the processes it starts); an inherited "disabled" must not open ours.
                os.environ.pop("RAY_AUTH_MODE", None)
                local = {"object_store_memory": 1 << 30}  # a cluster of our own: 1 GB of objects
            ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                     configure_logging=False, **local)
        finally:
            for name, value in found.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.verbose_stats_logs = False
    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return ray


class BlockActor:
    """One Ray Data actor: the model and the data source, and :func:`run_block` per block."""

    def __init__(self, model, source, specs):
        self.model = _on_this_device(model)
        self.source = source
        self.specs = specs

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from .blocks import run_block

        done = []
        for job, rows in zip(batch["job"], batch["rows"]):
            done.append(run_block(self.specs[int(job)], self.source, self.model, np.asarray(rows, np.int64)))
        return {"done": np.asarray(done, np.int64)}


def _on_this_device(model: Any) -> Any:
    """A torch model moves to this worker's GPU when Ray gave it one."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module) and torch.cuda.is_available():
        return model.to("cuda")
    return model


def run_on_ray(model: Any, source: Any, todo: list, progress: Callable | None, cancel: Callable | None,
               address: str | None, workers: int | None) -> None:
    """Run every (spec, rows) block of ``todo`` on Ray; progress counts committed rows."""
    if not todo:
        return
    if type(source).__name__ == "TensorFlowSource":
        raise SaliencyError("engine='ray' cannot send a tf.data.Dataset to its workers; pass a folder, an array or "
                            "a torch Dataset, or use engine='local'.")
    ray = connect(address)
    from ray.data import ActorPoolStrategy

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    size = workers or (gpus if gpus else max(1, min(2, int(resources.get("CPU", 1)))))
    specs = []
    index = {}
    items = []
    for spec, rows in todo:
        if id(spec) not in index:
            index[id(spec)] = len(specs)
            specs.append(spec)
        items.append({"job": index[id(spec)], "rows": [int(r) for r in rows]})
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    dataset = dataset.map_batches(
        BlockActor, fn_constructor_kwargs=dict(model=model, source=source, specs=specs),
        compute=ActorPoolStrategy(size=size), batch_size=1, num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus else 1)
    total, done = sum(len(item["rows"]) for item in items), 0
    # One pass over the results (a lazy dataset re-runs for each consumer): nothing but counts comes back.
    for batch in dataset.iter_batches(batch_size=None):
        done += int(batch["done"].sum())
        if progress is not None:
            progress(done, total)
        if cancel is not None and cancel():
            raise AttributionCancelled("Dataset job cancelled; the blocks committed stay.")
