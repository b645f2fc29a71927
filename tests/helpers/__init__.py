"""Test-only code: tiny real students, datasets and videos that tests build in seconds.

Pytest fixtures live in ``tests/conftest.py``; these are the plain functions behind them, which
tests and ``benchmarks/`` scripts also call directly (``from helpers.videos import ...``).
"""
