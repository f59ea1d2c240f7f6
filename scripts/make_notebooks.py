"""Write the example notebooks from scripts/notebook_sources/, then execute them in place.

    python scripts/make_notebooks.py                 # write and execute every notebook
    python scripts/make_notebooks.py cam evaluate    # only these
    python scripts/make_notebooks.py --no-execute    # write only

Each module in scripts/notebook_sources/ defines ``CELLS`` for notebooks/<module>.ipynb.
Cells starting with ``# NBVAL_CHECK_OUTPUT`` are compared by nbval against their
saved output: keep what they print stable (rounded).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "scripts" / "notebook_sources"
HERE = ROOT / "notebooks"


def load_cells(name: str) -> list:
    spec = importlib.util.spec_from_file_location(f"notebook_{name}", SOURCES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CELLS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="notebooks to write (default: all)")
    parser.add_argument("--no-execute", action="store_true")
    args = parser.parse_args()
    names = args.names or sorted(p.stem for p in SOURCES.glob("*.py"))
    HERE.mkdir(exist_ok=True)
    for name in names:
        notebook = new_notebook(cells=load_cells(name))
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = HERE / f"{name}.ipynb"
        nbformat.write(notebook, path)
        print("wrote", path)
        if not args.no_execute:
            # No widget state in the file (megabytes of images): the panel leaves a PNG snapshot instead.
            subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                            "--inplace", "--ExecutePreprocessor.store_widget_state=False", str(path)],
                           check=True, cwd=HERE)
            print("executed", path)


if __name__ == "__main__":
    main()
