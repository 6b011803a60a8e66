"""The benchmark's targets (each PASS or FAIL with its figure) and the table printed at the end of a run."""

NOTEBOOKS_TOTAL_S = 120.0
MANUAL_OVER_AUTOGRAD = 1.1
ACCURACY_SUBSET, ACCURACY_FULL = 0.95, 0.975
FULL_TRAINING_SET = 60_000  # the lessons' rule: the 0.975 target is for the full training set
AUTOGRADE_OVERHEAD_S = 2.0
FRAME_MEDIAN_MS = 30.0
SANDBOX_COST_S = 0.5
PARALLEL_EFFICIENCY = 0.8  # speedup of the parallel command over serial autograde, per core


def _target(name, value, goal, ok):
    return {"name": name, "value": value, "goal": goal, "pass": bool(ok)}


def targets(results):
    nb, mnist, grade, widgets = results["notebooks_s"], results["mnist"], results["autograde"], results["widgets"]
    classed = results["class_autograde"]
    full = mnist["mnist_train_set"] >= FULL_TRAINING_SET
    acc_goal = ACCURACY_FULL if full else ACCURACY_SUBSET
    acc_note = "full training set" if full else f"training subset of {mnist['mnist_train_set']:,} images"
    found = results["lessons_found"]
    return [
        _target(f"{len(nb)} of {found} lesson notebooks, total seconds", results["notebooks_total_s"],
                f"<= {NOTEBOOKS_TOTAL_S:g} s for all {found}",
                len(nb) == found and results["notebooks_total_s"] <= NOTEBOOKS_TOTAL_S),
        _target("hand-backprop / autograd epoch time", mnist["manual_over_autograd"], f"<= {MANUAL_OVER_AUTOGRAD:g}",
                mnist["manual_over_autograd"] <= MANUAL_OVER_AUTOGRAD),
        _target(f"autograd test accuracy after {mnist['epochs']} epochs", mnist["autograd_test_acc"],
                f">= {acc_goal:g} ({acc_note})", mnist["autograd_test_acc"] >= acc_goal),
        _target(f"hand-backprop test accuracy after {mnist['epochs']} epochs", mnist["manual_test_acc"],
                f">= {acc_goal:g} ({acc_note})", mnist["manual_test_acc"] >= acc_goal),
        _target("autograde overhead per notebook (after nbgrader's start), seconds", grade["overhead_s"],
                f"<= {AUTOGRADE_OVERHEAD_S:g} s",
                grade["overhead_s"] <= AUTOGRADE_OVERHEAD_S),
        _target("sandbox cost per notebook, seconds", grade["sandbox_cost_s"], f"<= {SANDBOX_COST_S:g} s",
                grade["sandbox_cost_s"] <= SANDBOX_COST_S),
        _target(f"parallel grading speedup on {classed['workers']} cores", classed["speedup"],
                f">= {PARALLEL_EFFICIENCY:g} x cores = {PARALLEL_EFFICIENCY * classed['workers']:g}",
                classed["speedup"] >= PARALLEL_EFFICIENCY * classed["workers"]),
        _target("cells scored differently by serial, parallel and Dask grading", classed["gradebook_differences"], "0",
                classed["gradebooks_equal"] and classed["gradebook_differences"] == 0),
        _target("1-D explorer frame median, ms", widgets["gd1d_frame_ms_median"], f"<= {FRAME_MEDIAN_MS:g} ms",
                widgets["gd1d_frame_ms_median"] <= FRAME_MEDIAN_MS),
        _target("2-D explorer frame median, ms", widgets["gd2d_frame_ms_median"], f"<= {FRAME_MEDIAN_MS:g} ms",
                widgets["gd2d_frame_ms_median"] <= FRAME_MEDIAN_MS),
    ]


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def table(results):
    m, nb, mnist, grade, w = (results[k] for k in ("machine", "notebooks_s", "mnist", "autograde", "widgets"))
    rows = [
        f"gradlab bench {results['mode']} run, {m['date']}",
        f"machine: {m['cores']} cores ({m['cpu_model']}), Python {m['python']}, torch {m['torch']} on {m['device']}, "
        f"{m['torch_threads']} torch threads, load average {m['load_before']:.2f} before, {m['load_after']:.2f} after",
        "",
        f"notebooks, seconds to execute the source with solutions (fresh kernel; {results['repeats']['notebooks']} run(s) each)",
    ]
    rows += [f"  {name:<28}{seconds:8.1f}" for name, seconds in nb.items()]
    rows += [
        f"  {'total':<28}{results['notebooks_total_s']:8.1f}",
        "",
        f"MNIST on {mnist['device']}: {mnist['train_images']:,} training images, batch {mnist['batch_size']}, "
        f"{mnist['epochs']} epochs (median epoch)",
        f"  {'autograd (lesson 6)':<28}{mnist['autograd_epoch_s']:8.3f} s/epoch   test accuracy {100 * mnist['autograd_test_acc']:.2f}%",
        f"  {'hand backprop (lesson 7)':<28}{mnist['manual_epoch_s']:8.3f} s/epoch   test accuracy {100 * mnist['manual_test_acc']:.2f}%",
        f"  {'hand / autograd':<28}{mnist['manual_over_autograd']:8.2f}",
        f"  {'DataLoader, per sample':<28}{mnist['dataloader_epoch_s']:8.3f} s/epoch   (median of {mnist['loader_repeats']})",
        f"  {'index slices (minibatches)':<28}{mnist['slicing_epoch_s']:8.3f} s/epoch",
        f"  {'DataLoader / slices':<28}{mnist['dataloader_over_slicing']:8.1f}",
        "",
        f"autograde: {', '.join(grade['lessons'])}, {grade['students']} submission(s) in one nbgrader command "
        f"({grade['command_s']:.1f} s)",
        f"  {'nbgrader start, per command':<28}{grade['nbgrader_start_s']:8.1f} s",
        f"  {'nbgrader, per notebook':<28}{grade['per_notebook_s']:8.1f} s",
        f"  {'plain execution':<28}{grade['plain_per_notebook_s']:8.1f} s",
        f"  {'overhead':<28}{grade['overhead_s']:8.1f} s",
        f"  {'without the sandbox':<28}{grade['unsandboxed_per_notebook_s']:8.1f} s per notebook "
        f"(sandbox cost {grade['sandbox_cost_s']:+.2f} s)",
        "",
        f"grading a class: {results['class_autograde']['students']} lesson-3 submissions (the bundled examples, cycled)",
        f"  {'serial nbgrader autograde':<28}{results['class_autograde']['serial_s']:8.1f} s",
        f"  {'parallel, %d workers' % results['class_autograde']['workers']:<28}"
        f"{results['class_autograde']['parallel_s']:8.1f} s   speedup {results['class_autograde']['speedup']:.2f}",
        f"  {'Dask, 2 worker processes':<28}{results['class_autograde']['dask_s']:8.1f} s",
        f"  {'gradebooks equal':<28}{str(results['class_autograde']['gradebooks_equal']):>8}",
        "  PROJECTION (not measured): 300 students x every lesson, from the measured cost per notebook:",
        "    " + ", ".join(f"{cores} cores {hours:.1f} h" for cores, hours in
                           results['class_autograde']['projection_hours'].items()),
        "",
        f"widgets: ms per Play frame under ipympl (callback + Agg redraw), {w['gd1d_frames']} and {w['gd2d_frames']} frames",
        f"  {'':<28}{'median':>8}{'p95':>8}{'callback':>10}{'redraw':>8}",
    ]
    for key, label in (("gd1d", "1-D explorer"), ("gd2d", "2-D explorer")):
        rows.append(f"  {label:<28}{w[f'{key}_frame_ms_median']:8.1f}{w[f'{key}_frame_ms_p95']:8.1f}"
                    f"{w[f'{key}_callback_ms_median']:10.2f}{w[f'{key}_draw_ms_median']:8.1f}")
    rows += ["", "targets"]
    rows += [f"  {'PASS' if t['pass'] else 'FAIL'}  {t['name']}: {_fmt(t['value'])} (goal {t['goal']})"
             for t in results["targets"]]
    if results["mode"] == "quick":
        rows.append("  (quick mode: shortened runs, the targets are not meaningful)")
    return "\n".join(rows)
