"""gunicorn settings for the API: threads, because `Prefer: wait` holds a request open for up to 60 s."""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "16"))
timeout = 90  # > the longest Prefer: wait (60 s)
graceful_timeout = 30
keepalive = 5
accesslog = os.environ.get("ACCESS_LOG") or None
