"""Checking that the process is monkey-patched by gevent.

Every connection is a greenlet: a handler that calls the standard library's
``time.sleep(2)``, a blocking socket or a real thread lock in an unpatched
process stops the whole event loop, and every other client waits those two
seconds too.  The server, the gunicorn worker and the Flask extension call
:func:`warn_if_unpatched` when they start; the warning is logged once per process.
"""

from __future__ import annotations

import logging

from gevent import monkey

#: The modules whose blocking calls would stall every connection.
REQUIRED_PATCHES = ("socket", "time", "threading")

_warned = False


def unpatched_modules() -> list[str]:
    """Which of :data:`REQUIRED_PATCHES` gevent has not patched in this process."""
    return [name for name in REQUIRED_PATCHES if not monkey.is_module_patched(name)]


def warn_if_unpatched(logger: logging.Logger) -> bool:
    """Log one warning (the first time in the process) if socket, time or threading are unpatched.

    Returns whether a warning was logged by this call.
    """
    global _warned
    missing = unpatched_modules()
    if not missing or _warned:
        return False
    _warned = True
    logger.warning(
        "The process is not monkey-patched by gevent (%s not patched): one blocking call in a handler "
        "(time.sleep, a database driver, requests) stalls every connection. Put "
        "'from gevent import monkey; monkey.patch_all()' in the very first lines of the program, "
        "before any other import, or start it with 'python -m gevent.monkey --module ...'. "
        "(Under a thread server, flask run or gunicorn -k gthread, each connection has a thread "
        "of its own and this does not apply.)",
        ", ".join(missing),
    )
    return True
