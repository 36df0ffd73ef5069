"""The watch handlers' successes are not logged; everything else kopf says is."""

from __future__ import annotations

import logging

from tritonscale.handlers.watch import QuietWatchHandlers


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, message, None, None)


def test_watch_handler_successes_are_dropped_and_the_rest_kept() -> None:
    quiet = QuietWatchHandlers()
    for name in ("track", "child_deployment_changed", "node_changed"):
        assert not quiet.filter(_record(f"Handler '{name}' succeeded."))
    assert quiet.filter(_record("Handler 'reconcile' succeeded."))
    assert quiet.filter(_record("Handler 'node_changed' failed with an exception. Will ignore."))


def test_the_quiet_names_are_the_handlers_functions() -> None:
    from tritonscale.handlers import operator, watch

    for name in QuietWatchHandlers.HANDLERS:
        assert callable(getattr(watch, name, None) or getattr(operator, name, None)), name
