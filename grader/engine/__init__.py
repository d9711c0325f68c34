"""Grading one submission: read it, run the stage suites under pytest with the grading plugin,
talk to the worker through proxies, check tensors, build Gradescope's results.json."""
