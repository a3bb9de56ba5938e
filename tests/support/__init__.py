"""Helpers shared by several test files (importable as ``support``: ``pythonpath = ["tests"]``)."""
