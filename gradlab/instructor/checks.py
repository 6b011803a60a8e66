"""Which hidden checks a test cell runs, read from the cell's trusted source (never from the kernel).

At autograde every test cell's source has been put back from the gradebook, hidden tests included, so it is
the instructor's code. Each call of a ``@graded`` check in it, such as ``lesson03.check_backward(backward)``
or ``lesson05.check_linear_backward(linear_forward, linear_backward, "dW")``, is a check the grader
replays; its arguments are names of the student's functions or literals.
"""
import ast
import importlib
from dataclasses import dataclass, field

PACKAGE = "gradlab.grading"


@dataclass
class CheckCall:
    module: str  # "lesson03"
    function: str  # "check_backward"
    args: list = field(default_factory=list)  # ("function", name of the student's function) or ("literal", value)
    kwargs: dict = field(default_factory=dict)

    @property
    def functions(self):
        return [value for kind, value in self.args if kind == "function"]

    @property
    def name(self):
        return f"{self.module}.{self.function}"

    def resolve(self):
        """The @graded function itself, from gradlab.grading only."""
        module = importlib.import_module(f"{PACKAGE}.{self.module}")
        check = getattr(module, self.function, None)
        if not callable(check) or not hasattr(check, "check_name"):
            raise LookupError(f"{self.name} is not a graded check of {PACKAGE}")
        return check


class NotACheck(ValueError):
    """The cell calls something of gradlab.grading in a form the grader cannot replay."""


def check_calls(source):
    """Every call of a graded check in the cell, in order of appearance."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise NotACheck(f"the test cell is not valid Python: {err}") from None
    aliases = _module_aliases(tree)
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        if isinstance(owner, ast.Name) and owner.id in aliases and node.func.attr.startswith("check_"):
            calls.append(_read(node, aliases[owner.id]))
    return [c for _, c in sorted(calls, key=lambda c: c[0])]


def _module_aliases(tree):
    """{local name: lesson module} for `from gradlab.grading import lesson03 [as x]`."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name
    return aliases


def _read(node, module):
    args = []
    for arg in node.args:
        if isinstance(arg, ast.Name):
            args.append(("function", arg.id))
            continue
        try:
            args.append(("literal", ast.literal_eval(arg)))
        except ValueError:
            raise NotACheck(f"{module}.{node.func.attr}: an argument must name a student's function or be a literal") from None
    kwargs = {}
    for kw in node.keywords:
        try:
            kwargs[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            raise NotACheck(f"{module}.{node.func.attr}: keyword {kw.arg} must be a literal") from None
    return (node.lineno, node.col_offset), CheckCall(module, node.func.attr, args, kwargs)
