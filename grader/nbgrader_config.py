"""nbgrader configuration of the course. Run every nbgrader command from this folder (grader/)."""
c = get_config()  # noqa: F821  (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "gradlab"
# The lesson sources live in the repository's notebooks/ folder, one assignment per lesson.
c.CourseDirectory.source_directory = "../notebooks"

# What a student sees in place of a solution region.
c.ClearSolutions.code_stub = {
    "python": '# YOUR CODE HERE\nraise NotImplementedError("Replace this line with your solution, then run the check below.")'
}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# An endless loop costs the cell it is in, not the whole run.
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True
