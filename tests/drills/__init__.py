"""Helpers of the reliability drills (tests/test_drills_*.py and bench/soak.py)."""
