"""WSGI entry point for Gunicorn (``app.wsgi:app``)."""

from app import create_app

app = create_app()
