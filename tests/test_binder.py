"""Replay Binder's build in a fresh virtual environment and run the quickstart there.

No Docker here, so this is the nearest honest check of `binder/`. Two changes
from Binder, both forced by this machine: the line naming the extra package
index for CPU-only torch is dropped (it cannot be reached), and torch is
pinned to 2.13.0, the CPU build on this disk, with a constraints file.
"""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_binder_requirements_and_postbuild_run_the_quickstart(tmp_path):
    env_dir = tmp_path / "binder-env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    requirements = [
        line for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
        if not line.startswith("--extra-index-url")
    ]
    (tmp_path / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (tmp_path / "constraints.txt").write_text("torch==2.13.0\n")
    run = lambda *args, **kw: subprocess.run(args, check=True, capture_output=True, text=True, **kw)
    run(str(python), "-m", "pip", "install", "-q", "-r", str(tmp_path / "requirements.txt"),
        "-c", str(tmp_path / "constraints.txt"))
    env = {**os.environ, "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(env_dir)}
    env.pop("PYTHONPATH", None)
    run("bash", str(ROOT / "binder" / "postBuild"), cwd=ROOT, env=env)
    # Voila is installed and the quickstart runs top to bottom in that environment.
    run(str(python), "-c", "import voila, salwidget, torch; assert torch.__version__.startswith('2.13.0')", env=env)
    executed = tmp_path / "quickstart.ipynb"
    run(str(python), "-m", "nbconvert", "--to", "notebook", "--execute", str(ROOT / "notebooks" / "quickstart.ipynb"),
        "--output", str(executed), env=env, cwd=tmp_path)
    assert "tiger cat" in executed.read_text()
