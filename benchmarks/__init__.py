"""`make bench`: what students and instructors wait for (benchmarks/README.md). Entry point: benchmarks/run.py."""
