"""Typed runtime failures. Each is a :class:`UserError`: one line on the CLI, catchable in Python.

``BundleError`` (a bundle that cannot be used) lives with the bundle format in
``exo2ego_edge.bundle`` and ``VideoError`` in ``exo2ego_edge.errors`` (the data layer raises it
too); both are re-exported here so runtime users import every error from one place.
"""

from __future__ import annotations

from exo2ego_edge.bundle import BundleError
from exo2ego_edge.errors import UserError, VideoError

__all__ = ["BackendError", "BundleError", "PromptError", "SourceError", "UserError", "VideoError"]


class SourceError(UserError):
    """A live source (camera, network stream) that cannot be opened or stopped delivering frames."""


class PromptError(UserError):
    """A question the model cannot take: empty, or longer than the context the bundle was sized for."""


class BackendError(UserError):
    """A backend that cannot run here: not installed, wrong GPU, an engine built for another TensorRT."""
