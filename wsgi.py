"""WSGI entry point: `gunicorn wsgi:app` serves the API; run `gateway worker` beside it."""

from gateway import create_app, gctune

app = create_app()
gctune.settle()
