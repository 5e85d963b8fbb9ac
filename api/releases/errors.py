"""The error every release operation raises for bad input or a broken release."""

from __future__ import annotations

from skyledger.schema.errors import SkyledgerError

__all__ = ["ReleaseError"]


class ReleaseError(SkyledgerError):
    """A release could not be created, found or verified; the message says which and why."""
