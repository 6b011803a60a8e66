"""pyproject.toml (pip) and environment.yml (conda) must ask for the same packages."""
import re
import tomllib

import yaml


def normalise(requirement):
    name, spec = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", requirement).groups()
    return re.sub(r"[-_.]+", "-", name).lower() + spec.replace(" ", "")


def pip_side(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    required = project["dependencies"] + extras["grader"] + extras["test"]
    return {normalise(r) for r in required}


def conda_side(root):
    env = yaml.safe_load((root / "environment.yml").read_text())
    conda, pip = [], []
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            pip += [p for p in entry["pip"] if not p.startswith("-e")]
        else:
            conda.append(entry.replace("=", "==", 1) if re.match(r"^[\w-]+=[^=]", entry) else entry)
    return {normalise(r) for r in conda}, {normalise(r) for r in pip}, env


def test_the_two_lists_agree(repo_root):
    conda, pip, _ = conda_side(repo_root)
    conda -= {"python==3.11", "pip"}
    assert pip_side(repo_root) == conda | pip


def test_torch_is_pinned_and_installed_by_pip_in_both(repo_root):
    conda, pip, env = conda_side(repo_root)
    assert "torch==2.13.0" in pip_side(repo_root)
    assert "torch==2.13.0" in pip and not any(c.startswith(("torch", "pytorch")) for c in conda)
    assert env["channels"] == ["conda-forge"] and "python==3.11" in conda


def test_the_local_package_is_installed_by_the_conda_environment(repo_root):
    _, _, env = conda_side(repo_root)
    pip = next(e["pip"] for e in env["dependencies"] if isinstance(e, dict))
    assert any(p.startswith("-e .") for p in pip)
