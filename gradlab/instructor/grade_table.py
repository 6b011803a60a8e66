"""Print one assignment's grades per test cell, from an nbgrader gradebook, and where the feedback is.

    cd grader && ../.venv/bin/python -m gradlab.instructor.grade_table 03-backprop-by-hand

`nbgrader export` gives one total per student; this shows which cells cost the points, which is what an
instructor checks first after autograding. "?" marks a cell that still needs manual grading, "-" a student
of the course with no submission. Under the table, every student and cell where the static scan found autograd
or code that tampers with the grader (gradlab.instructor.scan): a flag takes no points, it says which code to read.
The class report (gradlab.instructor.report) shows the mistakes behind the points.
"""
import argparse
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry


def rows(gradebook, assignment):
    """(columns [(grade_id, max_score)], {student: {grade_id: score or None} or None}) for each notebook cell."""
    columns, table = [], {}
    for notebook in gradebook.find_assignment(assignment).notebooks:
        order = [cell.name for cell in notebook.source_cells]
        columns += sorted(((c.name, c.max_score) for c in notebook.grade_cells), key=lambda c: order.index(c[0]))
    for student in gradebook.students:
        try:
            submission = gradebook.find_submission(assignment, student.id)
        except MissingEntry:
            table[student.id] = None
            continue
        table[student.id] = {
            grade.name: None if grade.needs_manual_grade else grade.score
            for notebook in submission.notebooks for grade in notebook.grades
        }
    return columns, table


def render(assignment, columns, table):
    headers = [name.removeprefix("test_") for name, _ in columns]
    width = max([len("student")] + [len(s) for s in table])
    total = sum(points for _, points in columns)
    lines = [f"{assignment}: points per test cell ('?' needs manual grading, '-' no submission)",
             "  ".join(["student".ljust(width)] + headers + ["total"])]
    for student, scores in sorted(table.items()):
        if scores is None:
            cells, got = ["-".rjust(len(h)) for h in headers], "-"
        else:
            values = [scores.get(name) for name, _ in columns]
            cells = [_number(v).rjust(len(h)) for v, h in zip(values, headers)]
            got = "?" if None in values else _number(sum(values))
        lines.append("  ".join([student.ljust(width)] + cells + [f"{got} / {_number(total)}"]))
    lines.append("  ".join(["out of".ljust(width)] + [_number(p).rjust(len(h)) for (_, p), h in zip(columns, headers)]
                           + [_number(total)]))
    return "\n".join(lines)


def flag_lines(root, assignment):
    """Lines that list each flagged student and cell (from the grader's records), for under the table."""
    from . import report

    rows = report.flag_rows(root, assignment)
    if not rows and not (Path(root) / "records" / assignment).is_dir():
        return ["Static scan: no grader records for this assignment (autograde with the course's config writes them)."]
    shown = [r for r in rows if not r["in_solution"]]
    cells = {}
    for r in shown:
        cells.setdefault((r["student"], r["notebook"], r["cell"], r["grade_id"], r["where"]), []).append(r)
    lines = [f"Static scan: {len(cells)} flagged cell{'s' if len(cells) != 1 else ''} (autograd or code that tampers "
             "with the grader; no points taken: read the code)" + (":" if cells else ".")]
    width = max([len(student) for student, *_ in cells] + [0])
    for (student, notebook, cell, grade_id, where), found in cells.items():
        name = f"cell {cell}" + (f" ({grade_id})" if grade_id else "") + f", {where}"
        what = "; ".join(f"{r['category']}: {r['what']} (line {r['line']})" for r in found)
        lines.append(f"  {student.ljust(width)}  {notebook}.ipynb {name}: {what}")
    known = len(rows) - len(shown)
    if known:
        lines.append(f"  ({known} more that the lesson's own solution raises too, probably harmless: the class report "
                     "lists them.)")
    return lines


def _number(value):
    return "?" if value is None else f"{value:g}"


def feedback_files(root, assignment):
    return sorted(Path(root).glob(f"feedback/*/{assignment}/*.html"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment")
    parser.add_argument("--root", default=".", help="the nbgrader course folder (default: here)")
    args = parser.parse_args(argv)
    database = Path(args.root) / "gradebook.db"
    if not database.exists():
        raise SystemExit(f"no gradebook at {database}: run this from the course folder (grader/) after autograding.")
    with Gradebook(f"sqlite:///{database}") as gradebook:
        try:
            columns, table = rows(gradebook, args.assignment)
        except MissingEntry:
            raise SystemExit(f"{args.assignment} is not in {database}: release it first (nbgrader generate_assignment).")
    print(render(args.assignment, columns, table))
    print("\n" + "\n".join(flag_lines(args.root, args.assignment)))
    files = feedback_files(args.root, args.assignment)
    where = Path(args.root).resolve() / "feedback" / "<student>" / args.assignment
    print(f"\nFeedback: {len(files)} HTML files, one per student, in {where}/")


if __name__ == "__main__":
    main()
