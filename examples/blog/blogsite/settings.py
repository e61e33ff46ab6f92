"""Settings of the demo blog, driven entirely by environment variables (see README.md).

DATABASE_URL  postgres://user:pass@host:port/dbname[?libpq_option=value...]
SECRET_KEY    insecure demo default when unset
BLOG_RELEASE  "1" (before the status change), "2" (default) or "3" (subtitle and index; status retired)
BLOG_DRILLS   comma-separated failure drills to install (default: none)
LOG_LEVEL     root log level (default INFO)
"""

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

DEFAULT_DATABASE_URL = "postgres://postgres@localhost:5432/blog"


def parse_database_url(url: str) -> dict[str, Any]:
    """Turn a postgres:// URL into a Django DATABASES entry, without a dj-database-url dependency."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ImproperlyConfigured(f"DATABASE_URL must start with postgres://, got scheme {parts.scheme!r}")
    # urlsplit().hostname lower-cases, which would corrupt a percent-encoded socket directory
    # (postgres://u@%2Ftmp%2FPG/db), so the host is cut out of the netloc by hand.
    hostinfo = parts.netloc.rpartition("@")[2]
    host = hostinfo[1 : hostinfo.index("]")] if hostinfo.startswith("[") else hostinfo.partition(":")[0]
    try:
        port = parts.port
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL has an invalid port: {exc}") from exc
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured("DATABASE_URL must name a database: postgres://user:pass@host:port/dbname")
    # Extra query parameters (sslmode=require, ...) are passed to libpq unchanged.
    options: dict[str, str] = dict(parse_qsl(parts.query))
    # Fail fast instead of hanging a health check or a migrate Job on an unreachable server.
    options.setdefault("connect_timeout", "5")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": unquote(host),
        "PORT": str(port) if port else "",
        "OPTIONS": options,
        # One connection per request: nothing stale survives a database restore or restart.
        "CONN_MAX_AGE": 0,
    }


def _release() -> int:
    value = os.environ.get("BLOG_RELEASE", "2").strip()
    if value not in ("1", "2", "3"):
        raise ImproperlyConfigured(f'BLOG_RELEASE must be "1", "2" or "3", got {value!r}')
    return int(value)


# Failure drills for the operator's tests: name -> AppConfig (app label drill_<name>).
KNOWN_DRILLS = ("fail_atomic", "fail_nonatomic", "slow", "conflict", "irreversible", "drop_posts", "clash",
                "concurrent_index")
# Drills whose migrations depend on blog migrations that only release 2 ships.
RELEASE_2_DRILLS = ("drop_posts",)


def _drills(release: int) -> list[str]:
    names = [name.strip() for name in os.environ.get("BLOG_DRILLS", "").split(",") if name.strip()]
    unknown = sorted(set(names) - set(KNOWN_DRILLS))
    if unknown:
        raise ImproperlyConfigured(f"unknown BLOG_DRILLS {unknown}; known: {', '.join(KNOWN_DRILLS)}")
    if release < 2 and (needs_2 := sorted(set(names) & set(RELEASE_2_DRILLS))):
        raise ImproperlyConfigured(f"drills {needs_2} need BLOG_RELEASE=2")
    return list(dict.fromkeys(names))  # de-duplicated, order kept


BLOG_RELEASE = _release()
BLOG_DRILLS = _drills(BLOG_RELEASE)

SECRET_KEY = os.environ.get("SECRET_KEY", "insecure-demo-key-do-not-use-in-production")
DEBUG = False
ALLOWED_HOSTS = ["*"]

# No contenttypes/auth/admin: `migrate --plan` then lists only blog (and drill) migrations,
# which keeps the operator's plans short and deterministic.
INSTALLED_APPS = [
    "blog.apps.BlogConfig",
    *(f"drills.{name}.apps.DrillConfig" for name in BLOG_DRILLS),
]

# Release 1 is the code from before the status change: it ships only migrations 0001-0002,
# so its `migrate` stops there and its `showmigrations` does not know 0003-0005.
if BLOG_RELEASE == 1:
    MIGRATION_MODULES = {"blog": "blog.migrations_release1"}
# Release 3 is an expand-then-contract release: 0006-0007 expand, 0008 contracts (drops status).
if BLOG_RELEASE == 3:
    MIGRATION_MODULES = {"blog": "blog.migrations_release3"}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

ROOT_URLCONF = "blogsite.urls"
WSGI_APPLICATION = "blogsite.wsgi.application"
APPEND_SLASH = False

DATABASES = {"default": parse_database_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # Containers log to stdout; the operator's Jobs and devcluster read it from there.
    "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "plain"}},
    "root": {"handlers": ["stdout"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
