"""Hostile submissions graded at every isolation level this machine allows (see test_hostile.py)."""
