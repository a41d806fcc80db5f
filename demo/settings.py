"""Settings for the demo site: SQLite and the in-memory channel layer unless told otherwise.

Environment variables: ``DJANGO_SECRET_KEY``, ``DJANGO_DEBUG=1``, ``DJANGO_ALLOWED_HOSTS`` (comma-separated,
besides loopback), ``REDIS_URL``
(use channels-redis, and count the rate limit in Redis), ``DATABASE_ENGINE=postgresql`` with ``POSTGRES_DB``,
``POSTGRES_HOST``, ``POSTGRES_PORT``, ``POSTGRES_USER``.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-secret-key-change-me-0123456789-abcdefghijklmnop")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = [
    "127.0.0.1",
    "localhost",
    "[::1]",
    *filter(None, os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",")),
]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "mcp_gateway",
    "mcp_sessions",
    "mcp_oauth",  # OAuth 2.1 for MCP clients (pip install django-mcp-gateway[oauth])
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo.urls"
ASGI_APPLICATION = "demo.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if os.environ.get("DATABASE_ENGINE") == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("POSTGRES_DB", "mcp_gateway_demo"),
            "HOST": os.environ.get("POSTGRES_HOST", "127.0.0.1"),
            "PORT": os.environ.get("POSTGRES_PORT", "5432"),
            "USER": os.environ.get("POSTGRES_USER", "postgres"),
            # Persistent connections, checked before reuse: the gateway's queries honour these as views do.
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }

if os.environ.get("REDIS_URL"):
    # RedisChannelLayer (not PubSub: at-most-once, it lost accepted messages across a Redis restart), tuned:
    # all of a worker's sessions share one queue, so capacity is per worker; redis-py's socket timeout must
    # exceed channels-redis's 5 s blocking pop; the pool must exceed the POSTs a worker forwards at once.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": os.environ["REDIS_URL"], "socket_timeout": 15, "max_connections": 1000}],
                "capacity": 1000,
                "expiry": 30,
            },
        }
    }
    # The rate limit is counted there too, shared by every worker (in the in-process cache N workers would allow
    # N times the limit, as check --deploy's W009 says).
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["REDIS_URL"]}
    }
    MCP_GATEWAY_CACHE = "default"
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

# The MCP gateway: one server under /mcp/.
MCP_GATEWAY_SERVER = "demo.mcp_server.mcp"
# OAuth tokens first: the personal token authenticator refuses every bearer token that is not its own.
MCP_GATEWAY_AUTHENTICATORS = [
    "mcp_oauth.auth.OAuthTokenAuthenticator",
    "mcp_gateway.auth.BearerTokenAuthenticator",
    "mcp_gateway.auth.SessionCookieAuthenticator",
]
# Your MCP access (account/mcp/) in the demo's own look.
MCP_GATEWAY_ACCOUNT_BASE_TEMPLATE = "demo/base.html"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {
        # The MCP SDK's tracebacks for client errors (an unknown prompt) become one-line warnings; first, so that
        # the redaction reads the rewritten line.
        "sdk_client_errors": {"()": "mcp_gateway.logs.SdkClientErrorFilter"},
        "redact_secrets": {"()": "mcp_gateway.redaction.RedactSecretsFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["sdk_client_errors", "redact_secrets"],
        },
    },
    "loggers": {
        "mcp_gateway": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # The SDK's loggers (mcp.shared.jsonrpc_dispatcher, mcp.server.runner, ...): through the same filters.
        "mcp": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
}
