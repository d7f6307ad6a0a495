"""Entry point for `celery -A worker.main worker|beat`: reads the settings once and builds the app."""

from shared.logs import configure_logging
from shared.settings import Settings
from worker.celery_app import create_worker_app

settings = Settings.from_env()
configure_logging(settings)
app = create_worker_app(settings)
