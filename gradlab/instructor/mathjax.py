"""MathJax 3 for the feedback pages, kept in the environment rather than in git (grader/README.md).

``make setup`` runs ``python -m gradlab.instructor.mathjax DEST``: npm fetches the ``mathjax`` package at
the pinned version, and one file of it, ``es5/tex-svg-full.js`` (every TeX extension built in, formulas
drawn as SVG paths, so nothing else is ever loaded), is checked against its SHA-256 and written to DEST.
gradlab.instructor.feedback inlines that file into each feedback page.

Without npm, or offline, setup says so and goes on; the feedback pages then load MathJax from nbgrader's
CDN (and the log of ``nbgrader generate_feedback`` warns). A file whose checksum differs is refused.
"""
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "3.2.2"
FILE = "tex-svg-full.js"
SHA256 = "a4354ff94fd868aea0cc6eaaa79a57fda0588646fc46ee3700a349ee0a11cbe6"


def default_path():
    """Where setup puts the file: inside the environment that runs nbgrader."""
    return Path(sys.prefix) / "share" / "gradlab" / f"mathjax-{VERSION}" / FILE


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class FetchError(RuntimeError):
    pass


def fetch(dest):
    """Fetch the pinned MathJax file to ``dest`` with npm. Raises FetchError when npm cannot, ValueError when
    the file is not the one pinned."""
    dest = Path(dest)
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError("npm is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([npm, "pack", "--silent", f"mathjax@{VERSION}"], cwd=tmp, capture_output=True,
                                text=True, timeout=600)
        tarball = Path(tmp) / f"mathjax-{VERSION}.tgz"
        if result.returncode != 0 or not tarball.is_file():
            raise FetchError(f"npm pack mathjax@{VERSION} failed: {(result.stderr or result.stdout).strip()[-500:]}")
        with tarfile.open(tarball) as archive:
            member = archive.getmember(f"package/es5/{FILE}")
            data = archive.extractfile(member).read()
    got = hashlib.sha256(data).hexdigest()
    if got != SHA256:
        raise ValueError(f"mathjax@{VERSION} {FILE} has SHA-256 {got}, not the pinned {SHA256}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    partial.write_bytes(data)
    partial.replace(dest)
    return dest


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    dest = Path(argv[0]) if argv else default_path()
    if dest.is_file() and digest(dest) == SHA256:
        return 0
    try:
        fetch(dest)
    except FetchError as err:
        print(f"WARNING: MathJax for the feedback pages was not fetched ({err}). Feedback pages will load MathJax "
              "from the internet and show raw LaTeX offline; run `make setup` again with npm and a network.",
              file=sys.stderr)
        return 0
    except ValueError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    print(f"MathJax {VERSION} for the feedback pages: {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
