"""Fixtures of the ledger tests."""

from .postgres_server import table

__all__ = ["table"]
