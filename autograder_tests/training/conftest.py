"""Makes `training_checks` (the helpers shared by this folder's test files) importable.

The grader runs pytest with --import-mode=importlib, which puts no test folder on
sys.path; the helpers are loaded here, once, before the test files are collected.
"""

import importlib.util
import sys
from pathlib import Path

if "training_checks" not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        "training_checks", Path(__file__).with_name("training_checks.py"))
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["training_checks"] = _module
    _spec.loader.exec_module(_module)
