"""How well the package keeps its rooms apart: a static count over salwidget/ (issue 27).

``python benchmarks/house.py`` prints, from the source alone (nothing is imported):

- **private reaches**: ``x._name`` where ``x`` is not ``self``/``cls``/``super()`` and ``_name`` is
  defined (a function, class, assignment or ``self._name = ...``) only in *another* module of the package,
  or is assigned (``x._name = ...``: writing another object's private attribute); dunder names are not
  counted;
- **import cycles**: strongly connected groups of the package's import graph, counting imports inside
  functions too (a lazy import still ties two modules together; ``if TYPE_CHECKING:`` imports, never run,
  do not); those at import time are counted apart;
- **private imports**: ``from salwidget.x import _name`` (or a relative one) across modules;
- **longest modules** by line count.

``--list`` prints every private reach with its file and line; ``--json`` prints the numbers as JSON.
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "salwidget"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def parse_all() -> dict[str, tuple[Path, ast.Module]]:
    trees = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        trees[module_name(path)] = (path, ast.parse(path.read_text(), str(path)))
    return trees


def defined_names(tree: ast.Module) -> set[str]:
    """Every name a module defines: functions, classes, assignments (any depth), ``self.x = ...`` (not
    ``other.x = ...``: that writes an attribute some other module owns)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name)
              and node.value.id in ("self", "cls")):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_reaches(trees):
    definers = defaultdict(set)
    for mod, (_path, tree) in trees.items():
        for name in defined_names(tree):
            if is_private(name):
                definers[name].add(mod)
    found = []
    for mod, (path, tree) in trees.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and is_private(node.attr)):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue
            where = definers.get(node.attr, set())
            writes_other = isinstance(node.ctx, ast.Store)  # setting another object's private attribute
            if mod not in where and (writes_other or where):
                found.append((str(path.relative_to(ROOT)), node.lineno, ast.unparse(node)))
    return found


def resolve(mod: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def top_level_imports(tree: ast.Module):
    """Imports executed when the module is imported (module body, and ifs/trys in it, not TYPE_CHECKING)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if "TYPE_CHECKING" not in test:
                stack.extend(node.body)
            stack.extend(node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend(node.body)
            for handler in node.handlers:
                stack.extend(handler.body)
            stack.extend(node.orelse)
            stack.extend(node.finalbody)


def import_graph(trees, lazy: bool = True):
    """The package's import graph (``lazy``: imports inside functions too), and private names imported."""
    graph = defaultdict(set)
    private_imports = []
    for mod, (path, tree) in trees.items():
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
        nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                 and id(n) not in typing_only] if lazy else top_level_imports(tree)
        for node in nodes:
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = resolve(mod, path, node)
                targets = []
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    targets.append(child if child in trees else base)
            for target in targets:
                # A package's __init__ re-exporting its modules is no loop in meaning: its edges are left out.
                if target in trees and target != mod and path.name != "__init__.py":
                    graph[mod].add(target)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = resolve(mod, path, node)
                if not base.startswith("salwidget"):
                    continue
                for alias in node.names:
                    if is_private(alias.name) and f"{base}.{alias.name}" not in trees and base != mod:
                        private_imports.append((str(path.relative_to(ROOT)), node.lineno, f"{base}.{alias.name}"))
    return graph, private_imports


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print every private reach and private import")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    trees = parse_all()
    reaches = private_reaches(trees)
    graph, private_imports = import_graph(trees)
    loops = cycles(graph)
    eager_loops = cycles(import_graph(trees, lazy=False)[0])
    lengths = sorted(((len(p.read_text().splitlines()), str(p.relative_to(ROOT))) for p, _ in trees.values()),
                     reverse=True)
    numbers = {
        "private_reaches": len(reaches),
        "modules_with_private_reaches": len({f for f, _, _ in reaches}),
        "import_cycles": len(loops),
        "import_cycles_at_import_time": len(eager_loops),
        "private_imports": len(private_imports),
        "longest_modules": [f"{p} {n}" for n, p in lengths[:5]],
        "modules_over_700_lines": sum(n > 700 for n, _ in lengths),
    }
    if args.json:
        print(json.dumps(numbers, indent=1))
        return
    print(f"private reaches across modules: {numbers['private_reaches']} "
          f"(in {numbers['modules_with_private_reaches']} modules)")
    print(f"import cycles: {len(loops)}" + "".join(f"\n  {' <-> '.join(group)}" for group in loops))
    print(f"  of them at import time: {len(eager_loops)}")
    print(f"private names imported across modules: {len(private_imports)}")
    print("longest modules: " + ", ".join(numbers["longest_modules"]))
    print(f"modules over 700 lines: {numbers['modules_over_700_lines']}")
    if args.list:
        for path, line, text in reaches:
            print(f"  reach {path}:{line}: {text}")
        for path, line, text in private_imports:
            print(f"  import {path}:{line}: {text}")


if __name__ == "__main__":
    main()
