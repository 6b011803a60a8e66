"""`make bench` end to end in its quick mode: it runs, prints the table and writes a well-formed results file.

The timings themselves are not asserted (the quick mode's runs are too short to mean anything); what is
asserted is that every figure is there, has the right type and range, and that the two MNIST trainings
really train the same network on the same batches.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is not installed, unlike gradlab
from benchmarks import lesson_code  # noqa: E402

pytestmark = pytest.mark.slow

NUMBER = (int, float)


def is_number(value):
    return isinstance(value, NUMBER) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, repo_root):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    committed = repo_root / "benchmarks" / "results.json"
    before = committed.read_bytes() if committed.exists() else None
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
        cwd=repo_root, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (committed.read_bytes() if committed.exists() else None) == before, "the quick run overwrote results.json"
    return json.loads(out.read_text()), done.stdout


def test_results_have_every_figure_with_its_type(quick_run):
    results, _ = quick_run
    machine = results["machine"]
    assert isinstance(machine["cores"], int) and machine["cores"] >= 1
    assert machine["torch"].startswith("2.13.0") and isinstance(machine["device"], str)
    assert isinstance(machine["torch_threads"], int) and isinstance(machine["python"], str)
    assert results["mode"] == "quick"
    assert list(results["notebooks_s"]) == ["01-one-neuron"]
    assert all(is_number(s) and s > 0 for s in results["notebooks_s"].values())
    assert results["notebooks_total_s"] == pytest.approx(sum(results["notebooks_s"].values()))
    mnist = results["mnist"]
    for key in ("autograd_epoch_s", "manual_epoch_s", "manual_over_autograd", "dataloader_epoch_s",
                "slicing_epoch_s", "dataloader_over_slicing"):
        assert is_number(mnist[key]) and mnist[key] > 0, key
    assert mnist["manual_over_autograd"] == pytest.approx(mnist["manual_epoch_s"] / mnist["autograd_epoch_s"])
    assert mnist["train_images"] == 2000 and mnist["epochs"] == 1
    for key in ("autograd_test_acc", "manual_test_acc"):
        assert is_number(mnist[key]) and 0 <= mnist[key] <= 1, key
    grade = results["autograde"]
    assert all(is_number(grade[k]) and grade[k] > 0 for k in ("nbgrader_start_s", "plain_per_notebook_s"))
    assert grade["command_s"] > grade["nbgrader_start_s"]
    assert grade["per_notebook_s"] == pytest.approx((grade["command_s"] - grade["nbgrader_start_s"]) / grade["students"])
    assert grade["overhead_s"] == pytest.approx(grade["per_notebook_s"] - grade["plain_per_notebook_s"])
    widgets = results["widgets"]
    assert widgets["backend"] == "module://ipympl.backend_nbagg"
    for key in ("gd1d", "gd2d"):
        median, p95 = widgets[f"{key}_frame_ms_median"], widgets[f"{key}_frame_ms_p95"]
        assert is_number(median) and is_number(p95) and 0 < median <= p95
        assert widgets[f"{key}_frames"] == 5
        assert 0 < widgets[f"{key}_callback_ms_median"] <= p95 and widgets[f"{key}_draw_ms_median"] >= 0
        # A fast frame that shows something else than a full render of the same step would be worthless.
        assert widgets[f"{key}_frame_matches_full_render"] is True
    assert set(results["repeats"]) >= {"notebooks", "mnist_epochs", "dataloader_epochs", "autograde_students"}
    assert is_number(grade["unsandboxed_per_notebook_s"]) and is_number(grade["sandbox_cost_s"])
    assert grade["sandbox_cost_s"] == pytest.approx(grade["per_notebook_s"] - grade["unsandboxed_per_notebook_s"])
    classed = results["class_autograde"]
    assert classed["students"] == 2 and classed["gradebooks_equal"] is True and classed["gradebook_differences"] == 0
    for key in ("serial_s", "parallel_s", "dask_s", "task_s_per_notebook", "coordinator_s_per_notebook"):
        assert is_number(classed[key]) and classed[key] > 0, key
    assert classed["speedup"] == pytest.approx(classed["serial_s"] / classed["parallel_s"])
    assert set(classed["projection_hours"]) == {"2", "16", "64"}
    hours = classed["projection_hours"]
    assert hours["2"] > hours["16"] > hours["64"] > 0


def test_both_trainings_train_the_same_network_on_the_same_batches(quick_run):
    mnist = quick_run[0]["mnist"]
    # Same initial weights, batches and hyper-parameters: only rounding separates autograd from hand backprop.
    assert mnist["weights_max_abs_diff"] < 1e-4
    assert abs(mnist["autograd_test_acc"] - mnist["manual_test_acc"]) < 0.005


def test_targets_are_listed_and_printed(quick_run):
    results, printed = quick_run
    targets = results["targets"]
    assert len(targets) == 10
    for target in targets:
        assert set(target) == {"name", "value", "goal", "pass"}
        assert isinstance(target["name"], str) and isinstance(target["goal"], str)
        assert is_number(target["value"]) and isinstance(target["pass"], bool)
        assert f"{'PASS' if target['pass'] else 'FAIL'}  {target['name']}" in printed
    # One lesson of seven ran: the total cannot count as meeting the all-lessons target.
    assert targets[0]["pass"] is False
    assert "PROJECTION (not measured)" in printed


def test_lesson_code_runs_only_definitions_and_names_what_is_missing():
    lesson7 = lesson_code.load("07")
    assert {"forward", "backward", "sgd_step", "train_epoch"} <= set(lesson7)
    assert "params" not in lesson7 and "history" not in lesson7  # the notebook's demos did not run
    with pytest.raises(ValueError, match="no_such_name"):
        lesson_code.load("07", ["no_such_name"])
    with pytest.raises(ValueError, match="should match one notebook"):
        lesson_code.notebook_path("99")
