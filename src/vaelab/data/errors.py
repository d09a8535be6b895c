"""The one exception type of :mod:`vaelab.data`."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input or a missing/damaged dataset; the message names the problem and the fix."""
