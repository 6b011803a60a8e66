"""nbgrader configuration of the course. Run every nbgrader command from this folder (grader/).

What this adds to plain nbgrader 0.9 (grader/README.md explains each, and the risks that remain):
a broken submission costs that student the cells it breaks, never the run; a student's kernel has a
time limit per cell and a memory limit; feedback shows the diagnosis of a hidden test, not its code, and
its formulas render offline.
"""
c = get_config()  # noqa: F821  (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "gradlab"
# The lesson sources live in the repository's notebooks/ folder, one assignment per lesson.
c.CourseDirectory.source_directory = "../notebooks"

# What a student sees in place of a solution region.
c.ClearSolutions.code_stub = {
    "python": '# YOUR CODE HERE\nraise NotImplementedError("Replace this line with your solution, then run the check below.")'
}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# An endless loop costs the cell it is in, not the whole run. Every lesson cell runs well under this.
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True

# --- autograde: broken submissions and the student's kernel ------------------------------------------
# Both lists are nbgrader 0.9's defaults with gradlab's replacements marked; tests/test_grader_config.py
# checks that nothing else differs, so an nbgrader upgrade that changes its defaults is noticed.
c.Autograde.exporter_class = "gradlab.instructor.repair.ReadableNotebookExporter"  # a file that is not a notebook
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput",
    "gradlab.instructor.repair.RepairCellMetadata",  # instead of DeduplicateIds: a copied cell (nbgrader #1083)
    "nbgrader.preprocessors.OverwriteKernelspec",
    "gradlab.instructor.repair.RestoreCells",  # instead of OverwriteCells: deleted or edited test cells
    "nbgrader.preprocessors.CheckCellMetadata",
]
c.Autograde.autograde_preprocessors = [
    "gradlab.instructor.execute.TrustedExecute",  # instead of Execute: sandboxed kernel, test cells scored by the grader
    "gradlab.instructor.sanitize.CleanMarkdown",  # a student's markdown, safe in the formgrader (no scripts)
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
# nbgrader copies a submission's files following symlinks: a link to a file of this machine is removed first.
c.Autograde.pre_convert_hook = "gradlab.instructor.repair.drop_outside_links"
# A deleted or edited test cell is put back from the source and graded (hidden tests included).
c.OverwriteCells.add_missing_cells = True
# The student's sandbox (gradlab/instructor/sandbox.py): memory (RLIMIT_DATA, MiB), also CPU, processes, files.
c.Sandbox.memory_limit_mb = 4096

# --- feedback: the diagnosis of a hidden test, not its code ------------------------------------------
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    "gradlab.instructor.feedback.HideHiddenTests",
]
# The page: nbgrader's "feedback" template extended by gradlab_feedback (gradlab/instructor/templates/):
# explanations wrap in their box, a test's picture shows, and MathJax 3 is inlined so that formulas render
# with no network (`make setup` fetches it; c.FeedbackExporter.mathjax_file says where it is).
# Set on FeedbackExporter, not HTMLExporter, so that the formgrader's own pages keep nbgrader's templates.
c.GenerateFeedback.exporter_class = "gradlab.instructor.feedback.FeedbackExporter"
# A student's notebook is untrusted HTML: the formgrader (nbconvert's HTMLExporter) and the feedback pages keep
# its markdown and outputs' HTML only after nbconvert's sanitizer, so that no script of theirs runs in the
# instructor's browser (on the Jupyter server's origin, with the instructor's session).
c.HTMLExporter.sanitize_html = True
c.FeedbackExporter.template_name = "gradlab_feedback"

# --- nbgrader zip_collect: files downloaded from an LMS ----------------------------------------------
# Matches <student>_<notebook>.ipynb and Canvas's <student>_[LATE_]<id>_<id>_<notebook>[-<n>].ipynb,
# in any folder of the archive. Adapt it to your LMS's file names (grader/README.md).
c.FileNameCollectorPlugin.named_regexp = (
    r".*/(?P<student_id>[^/_]+)_(?i:late_)?(?:\d+_\d+_)?(?P<file_id>[^/_]+?)(?:-\d+)?\.ipynb$"
)
