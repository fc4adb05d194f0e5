"""Where things are, for every test whatever folder it sits in."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
DATA = TESTS / "data"
"""Committed test data: official scorer outputs, golden node keys and records."""
