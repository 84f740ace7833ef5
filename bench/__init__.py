"""Benchmarks: accuracy and speed figures printed as JSON (`python -m bench.<name> --json`)."""
