"""Failures the reconciler tells apart: worth retrying, or not."""

from __future__ import annotations


class TransientError(Exception):
    """The cluster could not do it now (conflict, throttling, unavailable); retry after `delay` s."""

    def __init__(self, message: str, delay: float = 10.0) -> None:
        super().__init__(message)
        self.delay = delay


class ConflictError(TransientError):
    """The object changed since it was read (resourceVersion precondition failed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, delay=1.0)


class RejectedError(Exception):
    """The API server refused an object as invalid or forbidden; retrying unchanged cannot help.

    `reason` is the CamelCase reason the status and Events report it under."""

    reason = "ApplyRejected"


class NameConflictError(RejectedError):
    """A child's name is taken by an object this InferenceService does not own: never adopted."""

    reason = "NameConflict"


class NamespaceTerminatingError(TransientError):
    """The namespace is being deleted: nothing may be created in it, and nothing needs to be."""
