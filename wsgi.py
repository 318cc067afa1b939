"""WSGI entry point: `gunicorn wsgi:app` serves the API; run `gateway worker` beside it."""

from gateway import create_app

app = create_app()
