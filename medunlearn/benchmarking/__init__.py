"""Reproducible unlearning benchmarks: suites (data + recipe), a resumable runner, result tables."""
