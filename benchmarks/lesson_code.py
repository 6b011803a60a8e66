"""Run a lesson's own definitions outside Jupyter, so that the benchmark times the lessons' code, not a copy.

From a source notebook (solutions included) this takes every top-level import of every code cell,
every function and class defined in a solution cell, and the first top-level definition of each
extra name asked for (a helper class, a constant, an explorer), and executes them in notebook order
in a fresh namespace. Nothing else of the notebook runs: no plots, no demos, no tests.
"""
import ast
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def notebook_path(lesson):
    """notebooks/NN-slug/slug.ipynb of the lesson whose folder starts with ``lesson`` ("06" or "06-mnist-pytorch")."""
    matches = sorted(NOTEBOOKS.glob(f"{lesson}*/*.ipynb"))
    if len(matches) != 1:
        raise ValueError(f"lesson {lesson!r} should match one notebook under {NOTEBOOKS}, found {len(matches)}")
    return matches[0]


def _python(cell):
    # IPython magics (%matplotlib widget) are not Python; they are not definitions either.
    return "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))


def _bound_names(node):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {n.id for target in node.targets for n in ast.walk(target) if isinstance(n, ast.Name)}
    return set()


def _statements(nb, names):
    imports, definitions, wanted = [], [], set(names)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        is_solution = cell.metadata.get("nbgrader", {}).get("solution", False)
        for node in ast.parse(_python(cell)).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imports.append(node)
            elif is_solution and isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                definitions.append(node)
            elif _bound_names(node) & wanted:
                definitions.append(node)
                wanted -= _bound_names(node)
    if wanted:
        raise ValueError(f"no top-level definition of {sorted(wanted)} in the notebook")
    return imports + definitions


def load(lesson, names=()):
    """A namespace (dict) holding the lesson's imports, its solution functions and the named definitions."""
    path = notebook_path(lesson)
    module = ast.Module(body=_statements(nbformat.read(path, as_version=4), names), type_ignores=[])
    namespace = {"__name__": f"lesson_{path.parent.name.replace('-', '_')}"}
    exec(compile(module, str(path), "exec"), namespace)
    return namespace
