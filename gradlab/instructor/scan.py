"""Read a submission's code (as code, not as text) for autograd and for code that tampers with the grader.

The guard in the student's kernel (gradlab.grading.guard) fails a by-hand exercise that uses autograd, but
code in the same process can switch it off on purpose. So the grader also reads what the student wrote: every
exercise cell, and every code cell that is not in the lesson's source as released (added or edited), and lists
what it finds for the instructor, cell by cell: autograd (except in exercises a lesson module lists in
AUTOGRAD_ALLOWED), complex numbers (the complex-step trick), code that reaches into torch's or IPython's internals, and any rebinding of a name the
lesson's test cells import (``lesson03 = ...``, ``check_grad = ...``, ``import numpy as torch``). It flags;
it does not take points: a flag is a reason to read the code, and the grade table and the class report show each one.
"""
import ast
import importlib
from pathlib import Path

import nbformat
from nbgrader import utils

AUTOGRAD_ATTRIBUTES = {
    "backward": "calls .backward()", "grad": "reads .grad", "autograd": "uses torch.autograd",
    "requires_grad": "sets requires_grad", "requires_grad_": "calls requires_grad_()",
    "enable_grad": "turns gradients on (enable_grad)", "set_grad_enabled": "turns gradients on (set_grad_enabled)",
    "func": "uses torch.func", "functorch": "uses functorch", "vjp": "uses vjp", "jvp": "uses jvp",
    "jacobian": "uses a Jacobian function", "hessian": "uses a Hessian function", "jacrev": "uses jacrev",
    "jacfwd": "uses jacfwd", "Parameter": "makes an nn.Parameter",
    "autograd_grads": "calls gradlab's autograd reference", "numerical_grads": "calls gradlab's finite differences",
    "forward_ad": "uses forward-mode autograd", "make_dual": "uses forward-mode autograd (make_dual)",
}
# No exercise needs complex numbers; with them, Im f(w + ih) / h is a derivative computed, not derived.
COMPLEX_NAMES = {
    "complex": "uses complex numbers", "complex64": "uses complex numbers", "complex128": "uses complex numbers",
    "cfloat": "uses complex numbers", "cdouble": "uses complex numbers", "view_as_complex": "uses complex numbers",
    "cmath": "uses complex numbers (cmath)",
}
TAMPERING_NAMES = {
    "_C": "reaches into torch._C", "overrides": "uses torch.overrides", "TorchFunctionMode": "defines a torch-function mode",
    "__torch_function__": "overrides __torch_function__", "saved_tensors_hooks": "uses saved-tensor hooks",
    "disable_saved_tensors_hooks": "disables saved-tensor hooks", "DisableTorchFunction": "disables torch functions",
    "exec": "runs code from a string (exec)", "eval": "runs code from a string (eval)", "compile": "compiles code",
    "__import__": "imports by name", "importlib": "imports by name (importlib)", "getattr": "looks up an attribute by name",
    "setattr": "sets an attribute by name", "delattr": "deletes an attribute by name", "globals": "uses globals()",
    "__globals__": "reaches into a function's globals", "__code__": "changes a function's code",
    "__builtins__": "uses __builtins__", "builtins": "uses builtins", "modules": "uses sys.modules",
    "get_ipython": "uses IPython's internals", "input_transformers_cleanup": "installs an input transformer",
    "input_transformers_post": "installs an input transformer", "publish_display_data": "publishes display data",
    "displayhook": "replaces the display hook", "gc": "walks the garbage collector", "inspect": "inspects frames",
    "_getframe": "inspects frames", "ctypes": "uses ctypes", "_exit": "ends the process (os._exit)",
    "subprocess": "starts programs", "socket": "opens network sockets", "signal": "handles signals",
    "threading": "starts threads", "_thread": "starts threads", "concurrent": "starts threads or processes",
    "multiprocessing": "starts processes", "base64": "decodes text into code or data (base64)",
    "b64decode": "decodes text into code or data (base64)", "codecs": "decodes text (codecs)",
    "zlib": "decompresses data (zlib)", "marshal": "loads code objects (marshal)", "pickle": "loads pickled objects",
}
# What a student's code may import without a flag: what the lessons use, and the standard library's plain helpers.
# Anything else (a module the submission wrote to disk and imports, say) is worth a look.
COURSE_MODULES = {
    "torch", "gradlab", "matplotlib", "numpy", "math", "time", "os", "IPython", "pandas", "ipywidgets", "tqdm",
    "itertools", "functools", "collections", "random", "typing", "dataclasses", "statistics", "copy", "operator",
    "warnings", "string", "fractions", "decimal", "numbers", "pprint", "textwrap", "enum", "abc", "heapq", "bisect",
    "array", "contextlib", "re", "json", "sys", "pathlib", "datetime", "cmath", "types",
}
# Strings that only code reaching for the grader's internals needs (a docstring may well say "backward").
SUSPICIOUS_TEXT = ("gradlab", "saved_tensors", "vnd.gradlab")
# Names that are autograd wherever they appear; other autograd words count only as attributes (x.backward()),
# since the exercises themselves are functions named backward, grads, ...
AUTOGRAD_NAMES = {"autograd_grads", "numerical_grads", "functorch", "enable_grad", "set_grad_enabled", "make_dual"}


def flags(nb, source_path=None):
    """[{cell, grade_id, where, category, what, line}] for a submission; ``source_path`` is the lesson's source
    notebook (without it, only the exercise cells are read)."""
    source = _lesson_source(source_path)
    released = _code_of(source)
    allowed = _autograd_allowed(nb)
    protected = _test_imports(source)
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or (utils.is_grade(cell) and not utils.is_solution(cell)):
            continue
        if utils.is_solution(cell):
            where = "exercise"
        elif released is not None and cell.source in released:
            continue
        elif released is None and not utils.is_solution(cell):
            continue
        else:
            where = "added or edited cell"
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        for category, what, line in read(cell.source) + rebinds(cell.source, protected):
            if category == "autograd" and grade_id in allowed:
                continue
            found.append({"cell": index + 1, "grade_id": grade_id, "where": where, "category": category,
                          "what": what, "line": line})
    return found


def read(source):
    """[(category, what, line)] found in one cell's code; a cell that does not parse is itself a finding."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        return [("unreadable", f"is not valid Python ({err.msg})", err.lineno or 0)]
    found = []
    for node in ast.walk(tree):
        for category, what in _judge(node):
            found.append((category, what, getattr(node, "lineno", 0)))
    unique = []
    for item in found:
        if item[:2] not in [u[:2] for u in unique]:
            unique.append(item)
    return unique


def rebinds(source, protected):
    """[("tampering", what, line)] for each module-level rebinding of a name the lesson's tests import.

    ``protected`` maps such a name to what the lesson imports under it ({"lesson03": "gradlab.grading.lesson03"});
    importing the same thing again is no finding. A name assigned inside a function counts only when the
    function declares it global.
    """
    if not protected:
        return []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = {}
    for node, name, bound in _module_bindings(tree):
        if name in protected and bound != protected[name]:
            found.setdefault(name, ("tampering", f"rebinds `{name}`, which the lesson's tests import", node.lineno))
    return list(found.values())


def _module_bindings(tree):
    """(node, name, what an import binds or None) for every name a cell binds in the notebook's namespace."""
    bindings = []

    def visit(node, scope_globals):
        # scope_globals: None at module level (every binding counts), else the names a function declares global
        def counts(name):
            return scope_globals is None or name in scope_globals

        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    continue
                if isinstance(node, ast.Import):
                    name = alias.asname or alias.name.split(".")[0]
                    bound = alias.name if alias.asname else name
                else:
                    name = alias.asname or alias.name
                    bound = f"{'.' * node.level}{node.module or ''}.{alias.name}"
                if counts(name):
                    bindings.append((node, name, bound))
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            if not isinstance(node, ast.Lambda) and counts(node.name):
                bindings.append((node, node.name, None))
            inner = {n for sub in ast.walk(node) if isinstance(sub, ast.Global) for n in sub.names}
            for child in (node.body if isinstance(node.body, list) else [node.body]):
                visit(child, inner)
            return
        if isinstance(node, ast.ClassDef):
            if counts(node.name):
                bindings.append((node, node.name, None))
            for child in node.body:
                visit(child, set() if scope_globals is None else scope_globals)
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            return  # their loop variables are their own
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)) and counts(node.id):
            bindings.append((node, node.id, None))
        for child in ast.iter_child_nodes(node):
            visit(child, scope_globals)

    for statement in tree.body:
        visit(statement, None)
    return bindings


def _judge(node):
    names = []
    if isinstance(node, ast.Attribute):
        names.append(node.attr)
    elif isinstance(node, ast.Name):
        names.append(node.id if node.id in AUTOGRAD_NAMES | set(TAMPERING_NAMES) | set(COMPLEX_NAMES) else "")
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        module = getattr(node, "module", None) or ""
        tops = {module.split(".")[0]} if isinstance(node, ast.ImportFrom) and not node.level else set()
        tops |= {alias.name.split(".")[0] for alias in node.names} if isinstance(node, ast.Import) else set()
        if isinstance(node, ast.ImportFrom) and node.level:
            tops.add("." * node.level + module)
        for top in sorted(tops - COURSE_MODULES - set(TAMPERING_NAMES) - set(AUTOGRAD_ATTRIBUTES) - set(COMPLEX_NAMES)):
            yield "tampering", f"imports `{top}`, a module the course does not use"
        names += [part for alias in node.names for part in (alias.name.split(".") + [alias.asname or ""])]
        names += module.split(".")
        if module.startswith("gradlab.grading") or any(a.name.startswith("gradlab.grading") for a in node.names):
            yield "tampering", "imports the grader's checks (gradlab.grading)"
    elif isinstance(node, ast.keyword) and node.arg == "requires_grad":
        yield "autograd", "passes requires_grad="
    elif isinstance(node, ast.Constant) and isinstance(node.value, complex):
        yield "numerical", "uses complex numbers (an imaginary literal)"
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value.lower()
        for word in SUSPICIOUS_TEXT:
            if word in text:
                yield "tampering", f"has the text {word!r} in a string"
    for name in names:
        if name in AUTOGRAD_ATTRIBUTES:
            yield "autograd", AUTOGRAD_ATTRIBUTES[name]
        if name in TAMPERING_NAMES:
            yield "tampering", TAMPERING_NAMES[name]
        if name in COMPLEX_NAMES:
            yield "numerical", COMPLEX_NAMES[name]


def _autograd_allowed(nb):
    """grade_ids of exercises meant to use autograd: AUTOGRAD_ALLOWED of the lesson modules the notebook's checks use."""
    from .checks import NotACheck, check_calls

    allowed = set()
    for cell in nb.cells:
        if cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell):
            try:
                calls = check_calls(cell.source)
            except NotACheck:
                continue
            for call in calls:
                module = importlib.import_module(f"gradlab.grading.{call.module}")
                allowed |= set(getattr(module, "AUTOGRAD_ALLOWED", ()))
    return allowed


def _lesson_source(path):
    """The lesson's source notebook, or None where it is not at hand."""
    if path is None or not Path(path).exists():
        return None
    return nbformat.read(path, as_version=4)


def _test_imports(source):
    """{name: what it is imported as} for the names the lesson's test cells import and use ({} without a source)."""
    protected = {}
    for cell in source.cells if source is not None else ():
        if cell.cell_type != "code" or not utils.is_grade(cell) or utils.is_solution(cell):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
        for _, name, bound in _module_bindings(tree):
            if bound is not None and name in used:
                protected[name] = bound
    return protected


def _code_of(source):
    """The sources of the lesson's own code cells (as released), or None where the lesson source is not at hand."""
    if source is None:
        return None
    return {cell.source for cell in source.cells if cell.cell_type == "code"}
