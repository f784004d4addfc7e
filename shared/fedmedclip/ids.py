"""Identifier types for paths and bodies: a number the databases can actually store.

The hub's ids and version numbers are SQL ``INTEGER`` columns, which PostgreSQL stores in 32
bits (SQLite in 64). A path such as ``/api/v1/rounds/9223372036854775808`` used to reach the
driver, which raised an overflow error that surfaced as a 500. Declaring the range on the
parameter turns it into a 422 naming the bound before any query runs. The bound is that of
the narrowest backend, so the answer is the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict

SQL_INTEGER_MAX = 2**31 - 1
"""Largest value of a SQL ``INTEGER`` column on PostgreSQL (and so on every backend)."""

DbId = Annotated[int, Field(ge=1, le=SQL_INTEGER_MAX)]
"""A row id (rounds, nodes, audit events): autoincrement ids start at 1."""

VersionNumber = Annotated[int, Field(ge=0, le=SQL_INTEGER_MAX)]
"""A model version: version 0 is the task's initial model."""

StrictDbId = Annotated[int, Strict(), Field(ge=1, le=SQL_INTEGER_MAX)]
"""A row id in a JSON body: an integer, not a float that happens to be whole (``1e30``)."""
