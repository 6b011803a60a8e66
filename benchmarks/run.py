"""`make bench`: time what students and instructors wait for, write benchmarks/results.json, print a table.

    .venv/bin/python -m benchmarks.run            # the full run (a few minutes)
    .venv/bin/python -m benchmarks.run --quick --out /tmp/r.json   # seconds-long smoke run

Targets that fail are printed as FAIL but do not fail the command: the exit status is 0 whenever the
benchmark itself ran. benchmarks/README.md says what each figure means.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python benchmarks/run.py): make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks.lesson_code import ROOT  # noqa: E402

SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
RESULTS = ROOT / "benchmarks" / "results.json"

FULL = {"lessons": None, "notebook_repeats": 1, "epochs": 10, "train_images": None, "loader_repeats": 3,
        "autograde_lesson": "03-backprop-by-hand", "students": 3, "frame_steps": None, "frame_repeats": 2,
        "diagnosis_cases": None, "class_students": 12}
QUICK = {"lessons": ["01"], "notebook_repeats": 1, "epochs": 1, "train_images": 2000, "loader_repeats": 1,
         "autograde_lesson": "01-one-neuron", "students": 1, "frame_steps": 5, "frame_repeats": 1,
         "diagnosis_cases": 4, "class_students": 2}


def parse(argv):
    parser = argparse.ArgumentParser(description="Benchmark the gradlab course (benchmarks/README.md).")
    parser.add_argument("--quick", action="store_true", help="a short smoke run; its targets mean nothing")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--lessons", nargs="+", help="execute only these lessons (01 02 ...; default: all)")
    parser.add_argument("--notebook-repeats", type=int, help="executions of each notebook (median; default 1)")
    parser.add_argument("--epochs", type=int, help="MNIST epochs of each training (default 10, the lessons' own)")
    parser.add_argument("--train-images", type=int, help="use only the first N training images (default: all)")
    parser.add_argument("--loader-repeats", type=int, help="DataLoader and slicing epochs (median; default 3)")
    parser.add_argument("--autograde-lesson", help="the lesson nbgrader autogrades (default 03-backprop-by-hand)")
    parser.add_argument("--students", type=int, help="submissions autograded in one command (default 3)")
    parser.add_argument("--frame-steps", type=int, help="animate only the first N steps of each explorer")
    parser.add_argument("--frame-repeats", type=int, help="times each explorer's animation is played (default 2)")
    parser.add_argument("--diagnosis-cases", type=int, help="only the first N mistakes of the diagnosis corpus")
    parser.add_argument("--class-students", type=int, help="submissions in the class-grading comparison (default 12)")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    for key in settings:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    for key in ("notebook_repeats", "epochs", "train_images", "loader_repeats", "students", "frame_steps",
                "frame_repeats", "diagnosis_cases", "class_students"):
        if settings[key] is not None and settings[key] < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1, got {settings[key]}")
    return args, settings


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(device):
    import torch

    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def widget_frames(steps, repeats):
    command = [sys.executable, "-m", "benchmarks.widgets", "--repeats", str(repeats)]
    if steps is not None:
        command += ["--max-steps", str(steps)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"the widget benchmark failed:\n{done.stderr}")
    return json.loads(done.stdout)


def main(argv=None):
    args, s = parse(argv)
    # As the tests do: the offline MNIST copy beside the repository when there is one, never a download.
    if not os.environ.get("MNIST_DIR") and SHARED_MNIST.is_dir():
        os.environ["MNIST_DIR"] = str(SHARED_MNIST)
    from benchmarks import autograde, class_grading, diagnosis, mnist, notebooks, report

    load_before = os.getloadavg()[0]
    print("notebooks", flush=True)
    executed = notebooks.run(s["lessons"], s["notebook_repeats"])
    print("MNIST", flush=True)
    mnist_result = mnist.run(s["epochs"], s["train_images"], s["loader_repeats"])
    print("autograde", flush=True)
    graded = autograde.run(s["autograde_lesson"], s["students"])
    print("class grading", flush=True)
    classed = class_grading.run(s["class_students"],
                                only=("example-blank", "example-invalid-json") if args.quick else None)
    classed["projection_hours"] = class_grading.projection(classed, executed["notebooks_s"], graded["overhead_s"])
    print("widgets", flush=True)
    frames = widget_frames(s["frame_steps"], s["frame_repeats"])
    print("diagnosis", flush=True)
    diagnosed = diagnosis.run(s["diagnosis_cases"])
    results = {
        "mode": "quick" if args.quick else "full",
        "machine": machine(mnist_result["device"]),
        "settings": s,
        "mnist_dir": os.environ.get("MNIST_DIR", "(default cache)"),
        "repeats": {"notebooks": s["notebook_repeats"], "mnist_epochs": s["epochs"],
                    "dataloader_epochs": s["loader_repeats"], "autograde_students": s["students"],
                    "widget_animations": s["frame_repeats"]},
        "lessons_found": len(notebooks.lesson_names()),
        **executed,
        "mnist": mnist_result,
        "autograde": graded,
        "class_autograde": classed,
        "widgets": frames,
        "diagnosis": diagnosed,
    }
    results["machine"]["load_before"] = load_before
    results["machine"]["load_after"] = os.getloadavg()[0]
    results["targets"] = report.targets(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report.table(results))
    print()
    print(diagnosis.table(diagnosed))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
