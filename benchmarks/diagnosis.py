"""How often a diagnosis names a real mistake: the corpus of tests/mistakes (real backprop mistakes from public
sources, re-expressed against the course's exercises), through three diagnoses:

    compare     gradlab.check.compare alone, on the first failing case a hidden check tries (today's first message)
    mechanism   gradlab.variants: the computation declared, every case tried, the message from the most
                informative failing case
    hidden      each lesson's own hidden check (lessonNN.check_x) in its plain local mode

named = the mistake a teacher would name; vague = "the values differ"; misleading = another specific mistake;
missed = the wrong answer passed. Targets (the mechanism): named >= 85 %, none misleading, none missed.

    .venv/bin/python -m benchmarks.diagnosis            # the whole corpus, a table
    .venv/bin/python -m benchmarks.diagnosis --limit 6  # the first six cases (a smoke run)
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMED_TARGET = 0.85
DIAGNOSES = ("compare", "mechanism", "hidden")


def _corpus():
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from mistakes import cases, runner

    return cases, runner


def run(limit=None, held_out=True):
    """The counts per diagnosis, each case's outcomes, and the targets; JSON-ready. ``held_out``: also the mistakes
    collected after the mechanism was written (tests/mistakes/cases.py, HELD_OUT), under "held_out"."""
    cases, runner = _corpus()
    out = _measure(runner, cases.CORPUS[:limit] if limit else cases.CORPUS)
    if held_out and not limit:
        out["held_out"] = _measure(runner, cases.HELD_OUT)
        del out["held_out"]["targets"]
    return out


def _measure(runner, corpus):
    started = time.perf_counter()
    results = runner.run(DIAGNOSES, corpus=corpus)
    seconds = time.perf_counter() - started
    out = {"corpus": len(corpus), "seconds": round(seconds, 2)}
    for name in DIAGNOSES:
        counts, total = results[name]["counts"], results[name]["total"]
        out[name] = {**counts, "total": total, "named_fraction": round(counts["named"] / total, 4) if total else None}
    rows = {m.id: {"kind": m.kind, "exercise": m.spec, "url": m.url} for m in corpus}
    for name in DIAGNOSES:
        for case_id, _, outcome, kind, _text in results[name]["cases"]:
            rows[case_id][name] = outcome
            rows[case_id][f"{name}_kind"] = kind
    out["cases"] = [{"id": k, **v} for k, v in rows.items()]
    mech = out["mechanism"]
    out["targets"] = [
        {"name": "mechanism: named fraction", "value": mech["named_fraction"], "goal": f">= {NAMED_TARGET:g}",
         "pass": mech["named_fraction"] is not None and mech["named_fraction"] >= NAMED_TARGET},
        {"name": "mechanism: misleading", "value": mech["misleading"], "goal": "0", "pass": mech["misleading"] == 0},
        {"name": "mechanism: missed", "value": mech["missed"], "goal": "0", "pass": mech["missed"] == 0},
    ]
    return out


def table(results):
    """The printed summary: one line per diagnosis, the targets, and the cases the mechanism does not name."""
    rows = [f"diagnosis: {results['corpus']} real mistakes (tests/mistakes), {results['seconds']:.1f} s",
            f"  {'':<12}{'named':>8}{'vague':>8}{'mislead':>9}{'missed':>8}{'named %':>9}"]
    for name in DIAGNOSES:
        r = results[name]
        share = "" if r["named_fraction"] is None else f"{100 * r['named_fraction']:.0f}%"
        rows.append(f"  {name:<12}{r['named']:>8}{r['vague']:>8}{r['misleading']:>9}{r['missed']:>8}{share:>9}"
                    + ("" if r["total"] == results["corpus"] else f"   (of {r['total']} with a hidden check)"))
    rows += [f"  {'PASS' if t['pass'] else 'FAIL'}  {t['name']}: {t['value']} (goal {t['goal']})"
             for t in results["targets"]]
    unnamed = [c for c in results["cases"] if c.get("mechanism") != "named"]
    rows += [f"  not named by the mechanism: {c['id']} ({c['kind']}): {c.get('mechanism')}" for c in unnamed]
    held = results.get("held_out")
    if held:
        rows.append(f"  held out ({held['corpus']} mistakes collected after the mechanism was written):")
        for name in DIAGNOSES:
            r = held[name]
            rows.append(f"  {name:<12}{r['named']:>8}{r['vague']:>8}{r['misleading']:>9}{r['missed']:>8}")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="only the first N cases of the corpus")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    results = run(args.limit)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
