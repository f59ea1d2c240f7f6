"""sw.attribute_dataset: maps and AUCs of every image, stored; the same as sw.attribute and
sw.deletion_insertion on the same rows; resumed after a kill; the Ray engine gives the local engine's results."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget.errors import SaliencyError
from salwidget.evaluation.similarity import spearman

from .helpers import PassGate, keras_twin, make_torch_cnn

N = 300


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(8)
    return rng.uniform(0, 1, size=(N, 3, 16, 16)).astype(np.float32), rng.integers(0, 5, N)


def test_stored_maps_and_aucs_equal_attribute_and_deletion_insertion_on_the_same_rows(data, tmp_path):
    x, labels = data
    model = make_torch_cnn()
    rows = [3, 200, 299, 17]
    result = sw.attribute_dataset(model, x, ["smoothgrad", "integrated"], rows=rows, labels=labels, store=tmp_path,
                                  options={"smoothgrad": {"nsamples": 6}, "integrated": {"nsamples": 8,
                                                                                          "baseline": 0.0}},
                                  dtype="float32", curve_steps=8, seed=3)
    table = result.table
    for method, options in (("smoothgrad", dict(nsamples=6)), ("integrated", dict(nsamples=8, baseline=0.0))):
        expected = sw.attribute(model, x[sorted(rows)], method, seed=3, image_ids=sorted(rows), **options)
        np.testing.assert_allclose(result.maps(method, sorted(rows)), expected.raw, rtol=1e-5, atol=1e-9)
        curves = sw.deletion_insertion(model, x[sorted(rows)], expected, steps=8)
        np.testing.assert_allclose(table.loc[sorted(rows), f"{method}_deletion_auc"], curves.auc_deletion, rtol=1e-5)
        np.testing.assert_allclose(table.loc[sorted(rows), f"{method}_insertion_auc"], curves.auc_insertion, rtol=1e-5)
    np.testing.assert_allclose(table.loc[sorted(rows), "integrated_completeness_gap"],
                               sw.attribute(model, x[sorted(rows)], "integrated", nsamples=8, baseline=0.0).delta,
                               rtol=1e-4, atol=1e-7)
    assert "smoothgrad_completeness_gap" not in table  # not a path method
    assert table["smoothgrad_deletion_auc"].notna().sum() == 4  # only the rows asked for
    masks = lambda m: np.abs(result.maps(m, sorted(rows))).sum(1)
    np.testing.assert_allclose(table.loc[sorted(rows), "integrated_vs_smoothgrad_spearman"],
                               spearman(masks("integrated"), masks("smoothgrad")), rtol=1e-5)


def test_a_second_call_reuses_what_is_stored_and_adds_columns(data, tmp_path):
    x, labels = data
    model = make_torch_cnn()
    first = sw.attribute_dataset(model, x, "vanilla", labels=labels, store=tmp_path, curve_steps=4)
    assert first.calls == 2  # two blocks of the 256-row grid
    gate = PassGate(model[0], when=lambda calls, grad: False)
    again = sw.attribute_dataset(model, first.scan, "vanilla", curve_steps=4)
    assert again.calls == 0 and gate.calls == 0
    more = sw.attribute_dataset(model, first.scan, ["vanilla", "gradcam"], curve_steps=4)
    assert more.calls == 2 and {"gradcam_deletion_auc", "gradcam_vs_vanilla_spearman"} <= set(more.table.columns)
    other = sw.attribute_dataset(model, first.scan, "vanilla", options={"vanilla": {}}, target="label", curve_steps=4)
    label = other.labels[0]
    assert label.startswith("vanilla_") and f"{label}_deletion_auc" in other.table  # another job, its own columns
    expected = sw.attribute(model, x[:5], "vanilla", target=labels[:5]).raw
    np.testing.assert_allclose(other.maps(label, range(5)), expected, rtol=1e-3, atol=1e-6)  # float32 by default


KILLED = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import salwidget as sw
    from tests.helpers import make_torch_cnn
    x = np.load(sys.argv[2])
    sw.attribute_dataset(make_torch_cnn(), x, "smoothgrad", store=sys.argv[3], options={"smoothgrad": {"nsamples": 3}},
                         curve_steps=4, progress=lambda done, total: done >= 256 and os.kill(os.getpid(), signal.SIGKILL))
""")


def test_a_job_killed_half_way_computes_only_the_missing_rows(data, tmp_path):
    from pathlib import Path

    x, _ = data
    np.save(tmp_path / "x.npy", x)
    root = Path(__file__).resolve().parents[1]
    killed = subprocess.run([sys.executable, "-c", KILLED, str(root), str(tmp_path / "x.npy"), str(tmp_path / "s")])
    assert killed.returncode == -9
    model = make_torch_cnn()
    resumed = sw.attribute_dataset(model, x, "smoothgrad", store=tmp_path / "s", options={"smoothgrad": {"nsamples": 3}},
                                   curve_steps=4)
    assert resumed.calls == 1  # the second block only
    whole = sw.attribute_dataset(model, x, "smoothgrad", store=tmp_path / "w", options={"smoothgrad": {"nsamples": 3}},
                                 curve_steps=4)
    np.testing.assert_array_equal(resumed.maps("smoothgrad", range(N)), whole.maps("smoothgrad", range(N)))
    np.testing.assert_allclose(resumed.table["smoothgrad_deletion_auc"], whole.table["smoothgrad_deletion_auc"])


def test_a_keras_model_stores_its_twins_maps(data, tmp_path):
    x, labels = data
    torch_model = make_torch_cnn()
    rows = [0, 1, 2]
    keras = sw.attribute_dataset(keras_twin(torch_model), x.transpose(0, 2, 3, 1), "integrated", rows=rows,
                                 labels=labels, store=tmp_path, dtype="float32", curve_steps=4,
                                 options={"integrated": {"baseline": 0.0, "nsamples": 8}})
    ours = sw.attribute(torch_model, x[rows], "integrated", baseline=0.0, nsamples=8).raw
    np.testing.assert_allclose(keras.maps("integrated", rows).transpose(0, 3, 1, 2), ours, rtol=1e-3,
                               atol=1e-4 * np.abs(ours).max())


@pytest.mark.parametrize("call, words", [
    (lambda m, x, d: sw.attribute_dataset(m, x, "smoothgrd", store=d), "Unknown method 'smoothgrd'"),
    (lambda m, x, d: sw.attribute_dataset(m, x, "smoothgrad", store=d, options={"smoothgrad": {"nsample": 3}}),
     "nsample"),
    (lambda m, x, d: sw.attribute_dataset(m, x, "vanilla", store=d, rows=[0, 300]), "rows holds 300, outside"),
    (lambda m, x, d: sw.attribute_dataset(m, x, "vanilla"), "needs store="),
    (lambda m, x, d: sw.attribute_dataset(m, x, "gradcam", store=d, options={"gradcam": {"layer": "7x"}}),
     "no layer '7x'"),
    (lambda m, x, d: sw.attribute_dataset(m, x, "vanilla", store=d, engine="spark"), "Unknown engine 'spark'"),
])
def test_bad_jobs_say_what_to_do(data, tmp_path, call, words):
    x, _ = data
    with pytest.raises(SaliencyError, match=words):
        call(make_torch_cnn(), x[:8], tmp_path)


def test_a_scan_of_other_weights_is_refused(data, tmp_path):
    x, _ = data
    scan = sw.scan(make_torch_cnn(), x[:8], store=tmp_path)
    other = make_torch_cnn(seed=1)
    with pytest.raises(SaliencyError, match="another model or other weights"):
        sw.attribute_dataset(other, scan, "vanilla")


def test_the_ray_engine_needs_ray_and_says_which_extra(data, tmp_path, monkeypatch):
    x, _ = data
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with pytest.raises(SaliencyError, match=r"pip install 'salwidget\[ray\]'"):
        sw.attribute_dataset(make_torch_cnn(), x[:8], "vanilla", store=tmp_path, engine="ray")


# ---------------------------------------------------------------------- Ray
def test_the_ray_engine_gives_the_local_engines_maps_and_aucs(data, tmp_path, ray_cluster):
    x, labels = data
    model = make_torch_cnn()
    options = {"smoothgrad": {"nsamples": 4}}
    seen = []
    on_ray = sw.attribute_dataset(model, x, ["smoothgrad", "gradcam"], labels=labels, store=tmp_path / "ray",
                                  engine="ray", workers=2, options=options, curve_steps=4,
                                  progress=lambda done, total: seen.append((done, total)))
    local = sw.attribute_dataset(model, x, ["smoothgrad", "gradcam"], labels=labels, store=tmp_path / "local",
                                 options=options, curve_steps=4)
    assert seen[-1] == (2 * N, 2 * N) and len(seen) == 4  # rows, counted per block
    for method in ("smoothgrad", "gradcam"):
        np.testing.assert_allclose(on_ray.maps(method, range(N)), local.maps(method, range(N)), rtol=1e-3, atol=1e-7)
    columns = [c for c in local.table.columns if c.endswith(("_auc", "_spearman"))]
    np.testing.assert_allclose(on_ray.table[columns].to_numpy(), local.table[columns].to_numpy(), rtol=1e-5,
                               atol=1e-6)


def test_rows_of_a_ray_worker_that_dies_are_run_again_not_lost(data, tmp_path, ray_cluster):
    import os

    x, _ = data
    flag = str(tmp_path / "died")

    class DiesOnce(torch.nn.Module):  # defined here: it travels to the workers by value
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, images):
            import ray

            if ray.get_runtime_context().get_actor_id() is not None and not os.path.exists(flag):
                open(flag, "w").close()
                os._exit(1)  # the worker process dies in the middle of its first block
            return self.net(images)

    model = DiesOnce(make_torch_cnn())
    result = sw.attribute_dataset(model, x, "vanilla", store=tmp_path / "s", engine="ray", workers=2, metrics=(),
                                  dtype="float32")
    assert os.path.exists(flag)  # a worker did die
    expected = sw.attribute(model.net, x, "vanilla").raw
    np.testing.assert_allclose(result.maps("vanilla", range(N)), expected, rtol=1e-5, atol=1e-9)


RAY_OWN_CLUSTER = textwrap.dedent("""
    import ipaddress, json, os, sys, urllib.error, urllib.request
    from pathlib import Path
    import numpy as np, psutil
    sys.path.insert(0, sys.argv[1])
    import salwidget as sw
    from tests.helpers import make_torch_cnn
    import ray  # Ray itself sets RAY_CLIENT_MODE when imported, in any process that uses it
    before = dict(os.environ)
    RAY_OWN = {"RAY_USAGE_STATS_ENABLED", "PYTHONBREAKPOINT"}  # set by ray.init itself (usage_lib, worker.py)
    x = np.random.default_rng(0).uniform(0, 1, (8, 3, 16, 16)).astype(np.float32)
    done = sw.attribute_dataset(make_torch_cnn(), x, "vanilla", store=sys.argv[2], engine="ray", workers=1,
                                metrics=(), dtype="float32")
    maps_equal = bool(np.allclose(done.maps("vanilla", range(8)), sw.attribute(make_torch_cnn(), x, "vanilla").raw,
                                  rtol=1e-5, atol=1e-9))
    changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k) and k not in RAY_OWN)
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()

    def answer(ip, port, header):  # an HTTP request from another host's point of view: no token, or Ray's
        request = urllib.request.Request(f"http://{ip}:{port}/get_runtime_envs_info", data=b"", method="POST",
                                         headers={"Authorization": f"Bearer {header}"} if header else {})
        try:
            return urllib.request.urlopen(request, timeout=30).status
        except urllib.error.HTTPError as error:
            return error.code

    cluster = {}
    for process in psutil.Process().children(recursive=True):
        try:
            name, env = process.name(), process.environ()
            sockets = [c.laddr for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
        exposed = [a for a in sockets if not ipaddress.ip_address(a.ip).is_loopback]
        info = dict(auth=env.get("RAY_AUTH_MODE"), open=[a.ip for a in exposed])
        if name.startswith("ray::RuntimeEnvAgent"):  # an HTTP server: ask it without and with the token
            info["answers"] = [[answer(a.ip, a.port, None), answer(a.ip, a.port, "wrong"), answer(a.ip, a.port, token)]
                               for a in exposed]
        cluster[f"{name}:{process.pid}"] = info
    print(json.dumps(dict(changed=changed, maps_equal=maps_equal, cluster=cluster)))
""")


def test_a_ray_cluster_of_salwidgets_own_needs_a_token_and_leaves_the_environment_alone(tmp_path):
    """engine='ray' with no Ray running starts a local cluster: every one of its processes that listens
    beyond loopback runs with Ray's token authentication (the runtime-env agent, whose environment does not
    show it, is asked over HTTP: it refuses a request without the token or with a wrong one and answers one
    with it), and the user's environment is as it was."""
    import json
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path / "home")  # Ray keeps its token under ~/.ray: not the real home's
    # A busy test machine starts Ray's agents slowly: longer waits than Ray's defaults (read at the start)
    env.update(RAY_agent_register_timeout_ms="180000", RAY_raylet_start_wait_time_s="180")
    run = subprocess.run([sys.executable, "-c", RAY_OWN_CLUSTER, str(root), str(tmp_path / "s")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["maps_equal"] and found["changed"] == []
    assert any(name.startswith("gcs_server") for name in found["cluster"])  # the cluster was seen
    exposed = {name: info for name, info in found["cluster"].items() if info["open"]}
    # Ray's runtime-env agent reads the mode from the cluster's configuration, not its environment: its
    # answers show the token is required on every address it listens on.
    agents = {name: info for name, info in exposed.items() if name.startswith("ray::RuntimeEnvAgent")}
    assert exposed and all(info["auth"] == "token" for name, info in exposed.items() if name not in agents), exposed
    for name, info in agents.items():
        assert info["answers"] and all(a == [401, 403, 200] for a in info["answers"]), (name, info)


@pytest.mark.parametrize("address, user_mode", [(None, None), (None, "disabled"), ("ray://cluster:10001", "token"),
                                                ("ray://cluster:10001", None)])
def test_connect_starts_ray_under_its_token_default_and_restores_the_environment(monkeypatch, address, user_mode):
    """What Ray sees when salwidget starts or joins a cluster (Ray itself replaced by a recorder): a local
    cluster of salwidget's own never starts with authentication disabled; a cluster at an address is joined
    with the user's settings; afterwards the environment is exactly as it was."""
    import os
    import types

    from salwidget.dataset import ray_engine

    seen = {}
    fake = types.SimpleNamespace(
        is_initialized=lambda: False,
        init=lambda **kwargs: seen.update(kwargs=kwargs, mode=os.environ.get("RAY_AUTH_MODE")),
        data=types.SimpleNamespace(DataContext=types.SimpleNamespace(get_current=lambda: types.SimpleNamespace())))
    monkeypatch.setattr(ray_engine, "require_ray", lambda: fake)
    for name in ("RAY_AUTH_MODE", "RAY_BACKEND_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    if user_mode is not None:
        monkeypatch.setenv("RAY_AUTH_MODE", user_mode)
    before = dict(os.environ)
    ray_engine.connect(address)
    assert dict(os.environ) == before
    assert seen["kwargs"]["address"] == address
    if address is None:
        assert seen["mode"] is None  # unset: Ray's default for a new local cluster, token authentication
    else:
        assert seen["mode"] == user_mode  # joined as the user configured it
