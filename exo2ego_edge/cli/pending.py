"""Commands whose capability a later issue delivers: they say so and exit non-zero."""

from __future__ import annotations

from exo2ego_edge.errors import UserError


def not_yet(what: str, issue: int) -> None:
    """Refuse honestly instead of pretending to work."""
    raise UserError(f"'{what}' is not implemented yet (tracked in issue {issue}).")
