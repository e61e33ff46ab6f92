"""Gunicorn settings, read automatically when gunicorn is started from this folder."""

# gunicorn >= 25.1 otherwise creates a control socket under $HOME/.gunicorn, which fails or litters
# in containers (read-only or missing home); nothing here uses gunicornc. Older versions ignore it.
control_socket_disable = True
# Access log on stdout, next to Django's log lines.
accesslog = "-"
