"""Worker classes for tests/test_gunicorn.py (gunicorn imports them with ``-k gunicorn_workers.NAME``)."""

from geventws.gunicorn import Worker


class QuickTlsWorker(Worker):
    """Our worker with a one-second TLS handshake deadline, as a user would set it: by subclassing."""

    tls_handshake_timeout = 1.0
