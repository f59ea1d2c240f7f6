"""Every shell command the README shows runs as a newcomer would run it, in a subprocess (issue 24).

The commands are read from the README itself: its fenced ``bash`` blocks and the ``python -m salwidget`` commands
quoted in its prose, so a README edit is tested as it reads. Each runs in a fresh folder holding a ``pictures/``
folder of ordinary pictures of different sizes and no labels, with the repository on ``PYTHONPATH`` and
``.venv/bin/python`` read as this interpreter.

Not run, and why: ``bash scripts/demo.sh`` (installs a virtual environment, then starts JupyterLab, a server that
does not end), ``bash .ci/run`` (the whole CI: set-up, every test and notebook; this test is part of it),
``.venv/bin/voila ...`` (a server) and ``.venv/bin/pip install ...`` (changes the environment).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
NOT_RUN = {
    "bash scripts/demo.sh": "sets up .venv and starts JupyterLab, a server that does not end",
    "bash .ci/run": "the whole CI, which runs this test",
    ".venv/bin/voila": "starts a server",
    ".venv/bin/pip install": "changes the environment",
}


def fenced_bash() -> list[str]:
    """The commands of the README's ```bash blocks (continuation lines joined)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        commands += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return commands


def quoted_commands() -> list[str]:
    """The ``python -m salwidget ...`` commands quoted in the README's prose."""
    return [c.strip() for c in re.findall(r"`((?:\.venv/bin/)?python -m salwidget [^`]*)`", README)]


def runnable() -> list[str]:
    commands, seen = [], set()
    for command in fenced_bash() + quoted_commands():
        if any(command.startswith(prefix) for prefix in NOT_RUN) or command in seen:
            continue
        seen.add(command)
        commands.append(command)
    return commands


def expand(command: str) -> str:
    """``python -m salwidget scan ...`` (the README's "stops after the scan") is the attribute-dataset example's
    scan: its model, data and store."""
    if not command.endswith("..."):
        return command
    example = next(c for c in fenced_bash() if " attribute-dataset " in c)
    words = shlex.split(example)
    kept = [w for i, w in enumerate(words) for flag in ("--model", "--data", "--store")
            if w == flag or (i and words[i - 1] == flag)]
    return shlex.join(shlex.split(command[:-3]) + kept)


def test_the_readme_has_the_commands_this_test_runs():
    commands = runnable()
    assert any(" demo " in c for c in commands) and any(" attribute-dataset " in c for c in commands)
    assert any(re.search(r" scan( |$)", c) for c in commands)
    assert [c for c in fenced_bash() if not any(c.startswith(p) for p in NOT_RUN)], "no runnable bash block"


@pytest.fixture
def folder(tmp_path):
    from PIL import Image

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(48, 64), (40, 31)]):  # ordinary pictures: different sizes, no labels
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(pictures / f"picture{i}.jpg")
    return tmp_path


@pytest.mark.parametrize("command", runnable())
def test_a_readme_command_runs_as_written(command, folder):
    argv = shlex.split(expand(command))
    if argv[0] in (".venv/bin/python", "python"):
        argv[0] = sys.executable
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and "Traceback" not in done.stderr, f"{command}\n{done.stdout}\n{done.stderr}"
    if " demo " in command:
        out = folder / argv[argv.index("--out") + 1]
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {out.name}" in done.stdout
    else:
        assert "scan: 2 images, no labels" in done.stdout and "nan" not in done.stdout.split("\n")[0]
    if " attribute-dataset " in command:
        assert "blocks computed" in done.stdout
        assert re.search(r"maps: 100%.*\b4/4\b", done.stderr), done.stderr  # 2 methods x 2 pictures
