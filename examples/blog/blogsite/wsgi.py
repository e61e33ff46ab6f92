"""WSGI entry point: `gunicorn blogsite.wsgi --bind 0.0.0.0:8000` from examples/blog."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blogsite.settings")

application = get_wsgi_application()
