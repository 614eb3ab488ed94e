"""Settings, all from environment variables with safe development defaults."""

import os
import warnings
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from harry_realtime import redis_conn

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    return env(name, "1" if default else "0").lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(env(name, str(default)))


DEBUG = env_bool("DJANGO_DEBUG", False)
# The published development key. A process refuses to start with it (or with a short key) unless
# HARRY_INSECURE_DEV_KEYS=1, which `make run`, `make test`, the benchmarks and the e2e suite set:
# anyone could sign tokens with a published key.
DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me-in-production"
MIN_KEY_LENGTH = 32
INSECURE_DEV_KEYS = env_bool("HARRY_INSECURE_DEV_KEYS", False)
SECRET_KEY = env("DJANGO_SECRET_KEY", DEV_SECRET_KEY)
ALLOWED_HOSTS = [h for h in env("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver,*").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "daphne",
    "harry_realtime.apps.HarryAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    "harry_realtime.apps.HarryRealtimeConfig",
    "school",
    "events",
    "presence",
    "syncqueue",
    "notifications",
    "culture",
    "board",
]

MIDDLEWARE = [
    "harry_realtime.middleware.RequestLogMiddleware",
    # Before the rest, so that it compresses their final response (harry_realtime/compression.py).
    "harry_realtime.compression.GzipResponseMiddleware",
    "harry_realtime.compression.GzipRequestMiddleware",
    # The API's URL path and query string: no NUL or lone surrogate reaches a view.
    "harry_realtime.inputguard.InputGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin, API docs) from the web process itself, compressed (Deploying in README).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "harry_realtime.middleware.AdminTenantMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# HTTP compression of the JSON API: responses from 1 KB up (spec `enableForBatchesOver`), and
# the largest inflated gzip request body accepted (as much as an uncompressed body may be).
HTTP_GZIP_MIN_BYTES = env_int("HTTP_GZIP_MIN_BYTES", 1024)
HTTP_GZIP_MAX_REQUEST_BYTES = env_int("HTTP_GZIP_MAX_REQUEST_BYTES", 2_621_440)  # DATA_UPLOAD_MAX_MEMORY_SIZE

ROOT_URLCONF = "harry_realtime.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "harry_realtime.asgi.application"

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

# Two database roles (docs/design.md, decision 4): `default` is the app role that serves every
# request under row-level security; `owner` owns the schema and runs migrations only.
DATABASE_URL = env("DATABASE_URL", "postgres://harry_app:harry_app@127.0.0.1:5432/harry_realtime")
DATABASE_OWNER_URL = env("DATABASE_OWNER_URL", "postgres://harry_owner:harry_owner@127.0.0.1:5432/harry_realtime")
TEST_DB_NAME = env("TEST_DB_NAME", "test_harry_realtime")
# DATABASE_URL points at PgBouncer in transaction pooling mode (web and worker processes; the
# listener, which needs LISTEN and a session advisory lock, connects to PostgreSQL directly).
# The RLS context is transaction-local (SET LOCAL, set_config(..., true)), so it fits that mode.
DB_PGBOUNCER = env_bool("DB_PGBOUNCER", False)


def _database(url: str, *, pooled: bool) -> dict:
    config = dj_database_url.parse(url)
    config["TEST"] = {"NAME": TEST_DB_NAME, "SERIALIZE": False}
    if pooled:
        # Under ASGI every request may run on a different thread, so persistent per-thread
        # connections leak (measured: "remaining connection slots are reserved" under load).
        # psycopg's pool hands a connection to each unit of work and takes it back.
        # The pool checks a connection before it hands it out (one empty query): after PostgreSQL
        # restarts or terminates backends, its idle connections are dead, and the first join,
        # replay page or presence write on one would fail.
        config["CONN_HEALTH_CHECKS"] = True
        config["OPTIONS"] = {
            "pool": {
                "min_size": env_int("DB_POOL_MIN_SIZE", 1),
                "max_size": env_int("DB_POOL_MAX_SIZE", 20),
                "timeout": env_int("DB_POOL_TIMEOUT_SECONDS", 10),
            }
        }
    if DB_PGBOUNCER:
        # PgBouncer in transaction pooling mode hands each transaction to any server connection:
        # a statement prepared on one is unknown on the next (PgBouncer < 1.21).
        config.setdefault("OPTIONS", {})["prepare_threshold"] = None
        config["DISABLE_SERVER_SIDE_CURSORS"] = True
    return config


DATABASES = {
    "default": _database(DATABASE_URL, pooled=env_bool("DB_POOL", True)),
    "owner": _database(DATABASE_OWNER_URL, pooled=False),
}
DATABASE_ROUTERS = ["harry_realtime.db_router.OwnerMigratesRouter"]
DB_PLATFORM_ROLE = "harry_platform"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
# Redis Sentinel (failover): `host:port,...` of the sentinels and the name they watch. When set,
# every Redis client, the channel layer and Celery find the primary through them
# (harry_realtime/redis_conn.py); REDIS_URL then gives only the database number and password.
REDIS_SENTINELS = env("REDIS_SENTINELS", "")
REDIS_SENTINEL_MASTER = env("REDIS_SENTINEL_MASTER", "mymaster")
_SENTINELS = redis_conn.parse_sentinels(REDIS_SENTINELS)
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "harry_realtime.channel_layer.BulkReceiveRedisChannelLayer",
        "CONFIG": {
            # socket_timeout None: redis-py 8 otherwise closes idle layer sockets (docs/design.md, decision 9).
            "hosts": [redis_conn.channel_layer_host(REDIS_URL, _SENTINELS, REDIS_SENTINEL_MASTER, socket_timeout=None)],
            "capacity": env_int("CHANNEL_LAYER_CAPACITY", 20000),
            "expiry": 60,
            "group_expiry": 86400,
            "prefix": env("CHANNEL_LAYER_PREFIX", "harry"),
        },
    }
}

AUTH_USER_MODEL = "school.User"
AUTHENTICATION_BACKENDS = ["harry_realtime.auth.TenantAwareModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# Demo and test logins hash faster; production keeps Django's default.
if env_bool("FAST_PASSWORD_HASHER", False):
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

JWT_SIGNING_KEY = env("JWT_SIGNING_KEY", SECRET_KEY)


def _refuse_development_keys() -> None:
    for name, value in (("DJANGO_SECRET_KEY", SECRET_KEY), ("JWT_SIGNING_KEY", JWT_SIGNING_KEY)):
        if value == DEV_SECRET_KEY or len(value) < MIN_KEY_LENGTH:
            raise ImproperlyConfigured(
                f"{name} is the published development key or shorter than {MIN_KEY_LENGTH} characters:"
                " set DJANGO_SECRET_KEY and JWT_SIGNING_KEY (e.g. `openssl rand -hex 32`), or"
                " HARRY_INSECURE_DEV_KEYS=1 on a development machine."
            )


if not INSECURE_DEV_KEYS:
    _refuse_development_keys()
JWT_ALGORITHM = "HS256"
JWT_ACCESS_TTL_SECONDS = env_int("JWT_ACCESS_TTL_SECONDS", 3600)
JWT_REFRESH_TTL_SECONDS = env_int("JWT_REFRESH_TTL_SECONDS", 30 * 24 * 3600)
JWT_ISSUER = env("JWT_ISSUER", "harry-realtime")
# Failed logins (wrong password or unknown user) counted in Redis per account and per client
# address over a window; past either limit, /api/auth/token answers 429 until the window ends.
LOGIN_MAX_FAILURES_PER_ACCOUNT = env_int("LOGIN_MAX_FAILURES_PER_ACCOUNT", 5)
LOGIN_MAX_FAILURES_PER_ADDRESS = env_int("LOGIN_MAX_FAILURES_PER_ADDRESS", 30)
LOGIN_FAILURE_WINDOW_SECONDS = env_int("LOGIN_FAILURE_WINDOW_SECONDS", 900)
# When set, the websocket `apikey` must equal it; when empty, the apikey may carry the user's JWT.
REALTIME_API_KEY = env("REALTIME_API_KEY", "")
# Bearer token for GET /metrics; empty means loopback clients only.
METRICS_TOKEN = env("METRICS_TOKEN", "")

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("uz", "O'zbek"), ("ru", "Русский"), ("ar", "العربية")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "Asia/Tashkent"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Compressed copies made by collectstatic (the image runs it); no hashed names, so templates
    # also render where collectstatic never ran (tests, `make run`).
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Without collected files (development, tests) whitenoise reads the apps' static folders, and
# the missing STATIC_ROOT it would warn about is expected.
WHITENOISE_USE_FINDERS = not STATIC_ROOT.is_dir()
if WHITENOISE_USE_FINDERS:
    warnings.filterwarnings("ignore", message="No directory at")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["harry_realtime.auth.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "harry_realtime.api.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON only, through the input guard (harry_realtime/inputguard.py): depth, NUL and lone
    # surrogates, 64-bit integers, body size. Form and multipart bodies get 415.
    "DEFAULT_PARSER_CLASSES": ["harry_realtime.inputguard.GuardedJSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Harry Realtime API",
    "DESCRIPTION": "Real-time backend of the Harry School CRM mobile apps.",
    "VERSION": "1.0.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The system's fonts (harry_api/redoc.html drops drf-spectacular's web fonts: no internet).
    "REDOC_UI_SETTINGS": {"theme": {"typography": {"fontFamily": "system-ui, sans-serif"}}},
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Schema completeness is an API-docs matter, checked by `manage.py spectacular --validate`,
    # not a deployment check: `check --deploy` reports security settings only.
    "ENABLE_DJANGO_DEPLOY_CHECK": False,
    # One name per choice set used in several places.
    "ENUM_NAME_OVERRIDES": {
        "RealtimePriorityEnum": "events.models.PRIORITIES",
        "PushPriorityEnum": "notifications.models.PRIORITIES",
        "SubscriptionTypeEnum": "events.models.SUBSCRIPTION_TYPES",
        "BatteryModeEnum": ["battery_saver", "high_performance", "standard"],
    },
    # Error responses every operation shares (harry_realtime/openapi.py); enums as by default.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "harry_realtime.openapi.add_error_responses",
    ],
}

CELERY_BROKER_URL = env("CELERY_BROKER_URL", redis_conn.celery_broker(REDIS_URL, _SENTINELS))
if _SENTINELS:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "master_name": REDIS_SENTINEL_MASTER,
        "sentinel_kwargs": {"socket_timeout": redis_conn.SENTINEL_SOCKET_TIMEOUT},
    }
CELERY_RESULT_BACKEND = None
# Redis outages are waited out (docs/design.md, decision 16): a worker or beat that starts while
# Redis is down keeps trying, and one that loses it reconnects for as long as it takes (Celery's
# default gives up after 100 attempts, and then the worker exits). A task published on a pooled
# connection that a Redis restart left dead is sent again on a new one (the publish retry).
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# django-celery-beat's database scheduler, touching BEAT_HEARTBEAT_FILE on each tick when set
# (the container health check of beat reads its age).
CELERY_BEAT_SCHEDULER = "harry_realtime.beat:HeartbeatScheduler"
BEAT_HEARTBEAT_FILE = env("BEAT_HEARTBEAT_FILE", "")
# Celery logs through Django's LOGGING (JSON lines), not its own root handler.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict = {}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "harry_realtime.logs.JsonFormatter"},
    },
    # Tokens never reach a log: the filter also goes onto the ASGI server's own handlers
    # (harry_realtime.logredact.install, run when the apps are ready).
    "filters": {"redact_secrets": {"()": "harry_realtime.logredact.RedactSecrets"}},
    # One JSON line per record (harry_realtime/logs.py); LOG_FORMAT=plain for the text format.
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": env("LOG_FORMAT", "json"),
            "filters": ["redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "harry.audit": {"level": "INFO"},
        "django.channels.server": {"level": "WARNING"},
    },
}

# The spec's index names are longer than Django's portable 30-character limit; PostgreSQL takes 63.
SILENCED_SYSTEM_CHECKS = ["models.E034"]

# Garbage-collector thresholds of the web and listener processes (harry_realtime/heap.py).
GC_THRESHOLDS = tuple(int(n) for n in env("GC_THRESHOLDS", "50000,20,10").split(","))

# Realtime gateway (events/consumers.py): the spec's limits; tests shorten the timers.
REALTIME_MAX_CHANNELS_PER_CONNECTION = env_int("REALTIME_MAX_CHANNELS_PER_CONNECTION", 10)
REALTIME_MAX_CONNECTIONS_PER_USER = env_int("REALTIME_MAX_CONNECTIONS_PER_USER", 5)
REALTIME_MAX_CONNECTIONS_PER_ORG = env_int("REALTIME_MAX_CONNECTIONS_PER_ORG", 200)
REALTIME_MAX_PAYLOAD_BYTES = env_int("REALTIME_MAX_PAYLOAD_BYTES", 64 * 1024)
# Non-critical socket deliveries wait out the school's prayer window (culture/delivery.py).
REALTIME_PRAYER_HOLD = env_bool("REALTIME_PRAYER_HOLD", True)
REALTIME_MAX_FRAME_BYTES = env_int("REALTIME_MAX_FRAME_BYTES", 1024 * 1024)
REALTIME_MAX_MESSAGES_PER_SECOND = env_int("REALTIME_MAX_MESSAGES_PER_SECOND", 100)
REALTIME_IDLE_TIMEOUT_SECONDS = float(env("REALTIME_IDLE_TIMEOUT_SECONDS", "60"))
# Each web process asks PostgreSQL this often whether the users of its sockets may still sign in
# (active, same school and role) and closes the sockets of those who may not (events/revocation.py).
REALTIME_REVOCATION_POLL_SECONDS = float(env("REALTIME_REVOCATION_POLL_SECONDS", "2"))
# A connection's slot in the shared per-user/per-org counts lapses unless heartbeats renew it:
# the last resort for a slot its live server process forgot (events/limits.py).
REALTIME_CONNECTION_LEASE_SECONDS = float(env("REALTIME_CONNECTION_LEASE_SECONDS", "90"))
# A server process renews its node heartbeat every third of this. A join that would be refused
# for a full count first reclaims the slots of dead processes: one of this host whose process is
# gone at once, one of another host once its heartbeat is this old (events/limits.py).
REALTIME_NODE_TTL_SECONDS = float(env("REALTIME_NODE_TTL_SECONDS", "10"))
# A join that finds its user's or organization's count full waits this long for slots to free
# before it is refused: a client reconnecting at once races the teardown of its previous sockets,
# which the server notices only at their next send (events/limits.py).
REALTIME_SLOT_WAIT_SECONDS = float(env("REALTIME_SLOT_WAIT_SECONDS", "2"))
# Database threads of a web process for its sockets' work (joins, replays, presence writes;
# harry_realtime/socket_db.py). Each holds one pooled connection while it runs a call: keep it
# below DB_POOL_MAX_SIZE, which the process's HTTP requests and other work share.
REALTIME_DB_THREADS = env_int("REALTIME_DB_THREADS", 4)
# The most stored events one join replays (in pages of events.selectors.REPLAY_PAGE); a client
# that missed more is told `resync_required` (docs/protocol.md#replay) instead.
REALTIME_REPLAY_MAX_EVENTS = env_int("REALTIME_REPLAY_MAX_EVENTS", 10000)
# Presence of a server process that stopped renewing its liveness is removed after this time.
REALTIME_PRESENCE_NODE_TTL_SECONDS = float(env("REALTIME_PRESENCE_NODE_TTL_SECONDS", "30"))

# Connection profiles (events/profiles.py, docs/realtime.md#connection-profiles). Spec
# "adaptiveHeartbeat": foreground REALTIME_HEARTBEAT_INTERVAL_MS (25 s, below), background or
# battery_saver 120 s, battery below 20 % 300 s. A socket's idle timeout is as many of its
# intervals as REALTIME_IDLE_TIMEOUT_SECONDS is of the foreground interval (2.4: 60 s, 288 s,
# 720 s); a heartbeat more than REALTIME_LATE_HEARTBEAT_FACTOR intervals after the previous one
# (one missed) marks the connection poor until the next one on time.
REALTIME_HEARTBEAT_BACKGROUND_MS = env_int("REALTIME_HEARTBEAT_BACKGROUND_MS", 120_000)
REALTIME_HEARTBEAT_LOW_BATTERY_MS = env_int("REALTIME_HEARTBEAT_LOW_BATTERY_MS", 300_000)
REALTIME_LOW_BATTERY_PERCENT = env_int("REALTIME_LOW_BATTERY_PERCENT", 20)
REALTIME_LATE_HEARTBEAT_FACTOR = float(env("REALTIME_LATE_HEARTBEAT_FACTOR", "2"))
# Events held back for a poor connection are announced at most this often per socket.
REALTIME_HELD_NOTICE_SECONDS = float(env("REALTIME_HELD_NOTICE_SECONDS", "2"))
# Opt-in batching per topic kind (events/batching.py): kind=max events/window ms.
REALTIME_BATCH_RULES = env("REALTIME_BATCH_RULES", "rankings=10/2000,attendance=50/1000,groups=50/1000,tasks=20/5000")

# Presence, connections and attendance collaboration (presence/). Spec "Connection Pooling":
# heartbeat 25 s, 5-minute marking window, at most 3 teachers marking one group (the connection
# and channel limits are the gateway's REALTIME_MAX_* above).
PRESENCE_REDIS_PREFIX = env("PRESENCE_REDIS_PREFIX", env("CHANNEL_LAYER_PREFIX", "harry"))
REALTIME_HEARTBEAT_INTERVAL_MS = env_int("REALTIME_HEARTBEAT_INTERVAL_MS", 25000)
# The socket mirror writes heartbeats to the tables at most this often per connection.
PRESENCE_MIRROR_WRITE_SECONDS = env_int("PRESENCE_MIRROR_WRITE_SECONDS", 60)
# A connection whose last stored heartbeat is older than this is disconnected by the expiry job;
# it must exceed the write interval above.
PRESENCE_CONNECTION_TIMEOUT_SECONDS = env_int("PRESENCE_CONNECTION_TIMEOUT_SECONDS", 150)
PRESENCE_TTL_SECONDS = env_int("PRESENCE_TTL_SECONDS", 300)
OFFLINE_MAX_QUEUE_SIZE = env_int("OFFLINE_MAX_QUEUE_SIZE", 1000)
ATTENDANCE_MARKING_WINDOW_SECONDS = env_int("ATTENDANCE_MARKING_WINDOW_SECONDS", 300)
ATTENDANCE_MAX_CONCURRENT_MARKERS = env_int("ATTENDANCE_MAX_CONCURRENT_MARKERS", 3)
CELERY_BEAT_SCHEDULE["presence-expire"] = {"task": "presence.tasks.expire_presence", "schedule": 30.0}

# Cultural calendar (culture/): prayer reminders, the spec's every-10-minutes job. Each school's
# approaching window (10 minutes by default) decides which prayers a run reminds of.
CULTURE_PRAYER_REMINDER_SECONDS = float(env("CULTURE_PRAYER_REMINDER_SECONDS", "600"))
CELERY_BEAT_SCHEDULE["culture-prayer-reminders"] = {
    "task": "culture.send_prayer_reminders",
    "schedule": CULTURE_PRAYER_REMINDER_SECONDS,
}

# --- Push notifications (notifications/) ---------------------------------------------------------
# Provider per device platform: "log" (default: writes to the log), "fcm", "apns", "webpush".
PUSH_BACKENDS = {
    "android": env("PUSH_ANDROID_BACKEND", "log"),
    "ios": env("PUSH_IOS_BACKEND", "log"),
    "web": env("PUSH_WEB_BACKEND", "log"),
}
PUSH_FCM = {
    "base_url": env("FCM_BASE_URL", "https://fcm.googleapis.com"),
    "project_id": env("FCM_PROJECT_ID", ""),
    # A service-account JSON file (google-auth mints and refreshes the OAuth token), or a token.
    "credentials_file": env("FCM_CREDENTIALS_FILE", ""),
    "access_token": env("FCM_ACCESS_TOKEN", ""),
    "timeout": float(env("PUSH_PROVIDER_TIMEOUT", "10")),
}
PUSH_APNS = {
    "base_url": env("APNS_BASE_URL", "https://api.push.apple.com"),
    "topic": env("APNS_TOPIC", ""),
    "team_id": env("APNS_TEAM_ID", ""),
    "key_id": env("APNS_KEY_ID", ""),
    "key_file": env("APNS_KEY_FILE", ""),
    "timeout": float(env("PUSH_PROVIDER_TIMEOUT", "10")),
}
PUSH_WEBPUSH = {
    "vapid_private_key": env("WEBPUSH_VAPID_PRIVATE_KEY", ""),
    "vapid_subject": env("WEBPUSH_VAPID_SUBJECT", "mailto:admin@example.com"),
    "timeout": float(env("PUSH_PROVIDER_TIMEOUT", "10")),
}
PUSH_RETRY_BASE_SECONDS = float(env("PUSH_RETRY_BASE_SECONDS", "30"))
PUSH_RETRY_MAX_SECONDS = float(env("PUSH_RETRY_MAX_SECONDS", "900"))
# A delivery claimed longer ago than this had its worker die mid-call; it is not resent.
PUSH_CLAIM_LEASE_SECONDS = env_int("PUSH_CLAIM_LEASE_SECONDS", 300)
# Pushes due further ahead than this are queued by the beat sweep, not with a long broker ETA.
PUSH_ENQUEUE_AHEAD_SECONDS = env_int("PUSH_ENQUEUE_AHEAD_SECONDS", 60)
CELERY_BEAT_SCHEDULE["push-dispatch-due"] = {
    "task": "notifications.dispatch_due_push_notifications",
    "schedule": float(env("PUSH_DISPATCH_INTERVAL_SECONDS", "15")),
}
CELERY_BEAT_SCHEDULE["push-expire"] = {
    "task": "notifications.expire_push_notifications",
    "schedule": 60.0,
}

# Offline sync (syncqueue): transient failures are retried with exponential backoff by beat.
SYNC_MAX_BATCH_OPERATIONS = env_int("SYNC_MAX_BATCH_OPERATIONS", 500)
SYNC_MAX_RETRIES = env_int("SYNC_MAX_RETRIES", 3)
SYNC_RETRY_BASE_SECONDS = env_int("SYNC_RETRY_BASE_SECONDS", 30)
SYNC_LOCK_TIMEOUT_MS = env_int("SYNC_LOCK_TIMEOUT_MS", 2000)
# Sync chunk transactions open at once per server process (more only queue on the GIL).
SYNC_CONCURRENT_TRANSACTIONS = env_int("SYNC_CONCURRENT_TRANSACTIONS", 2)
SYNC_RETRY_INTERVAL_SECONDS = env_int("SYNC_RETRY_INTERVAL_SECONDS", 30)
CELERY_BEAT_SCHEDULE["syncqueue-retry-due-operations"] = {
    "task": "syncqueue.tasks.retry_due_operations",
    "schedule": SYNC_RETRY_INTERVAL_SECONDS,
}

# Event pipeline (events/status.py, events/handoff.py, listener, tasks): an individual event still unacknowledged by
# a live socket this long after fan-out is handed to push; expiry runs every minute.
REALTIME_PUSH_GRACE_SECONDS = env_int("REALTIME_PUSH_GRACE_SECONDS", 30)
CELERY_BEAT_SCHEDULE["events-hand-undelivered-to-push"] = {
    "task": "events.hand_undelivered_to_push",
    "schedule": float(env("REALTIME_PUSH_HANDOFF_INTERVAL_SECONDS", "15")),
}
CELERY_BEAT_SCHEDULE["events-expire"] = {"task": "events.expire_events", "schedule": 60.0}

# The spec's alert thresholds, told to each school's admins (harry_realtime/alerts.py).
ALERTS_INTERVAL_SECONDS = float(env("ALERTS_INTERVAL_SECONDS", "60"))
CELERY_BEAT_SCHEDULE["alerts-evaluate"] = {
    "task": "harry_realtime.evaluate_alerts",
    "schedule": ALERTS_INTERVAL_SECONDS,
}

# --- Deployment behind a TLS proxy (README "Deploying") --------------------------------------------
# The proxy in front terminates TLS and says so in this header (e.g. `X-Forwarded-Proto`); empty
# means the web process is reached directly. Only set it when the proxy overwrites the header.
_PROXY_SSL_HEADER = env("DJANGO_SECURE_PROXY_SSL_HEADER", "")
if _PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"), "https")
# DJANGO_HTTPS=1: the site is served over HTTPS only: redirect, secure cookies, HSTS.
HTTPS_ONLY = env_bool("DJANGO_HTTPS", False)
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", HTTPS_ONLY)
# Container health checks and Prometheus reach the web process over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS_ONLY
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000 if HTTPS_ONLY else 0)
# Both on with DJANGO_HTTPS: turn them off when other hosts under the domain still serve plain HTTP.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS_ONLY)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", HTTPS_ONLY)

# Retention (harry_realtime/retention.py): how long finished rows are kept, purged hourly in
# bounded batches.
RETENTION_EVENTS_DAYS = env_int("RETENTION_EVENTS_DAYS", 30)
RETENTION_PUSH_DAYS = env_int("RETENTION_PUSH_DAYS", 30)
RETENTION_SYNC_CHANGES_DAYS = env_int("RETENTION_SYNC_CHANGES_DAYS", 30)
RETENTION_PRESENCE_HOURS = env_int("RETENTION_PRESENCE_HOURS", 24)
RETENTION_BATCH_SIZE = env_int("RETENTION_BATCH_SIZE", 1000)
RETENTION_MAX_BATCHES = env_int("RETENTION_MAX_BATCHES", 50)
CELERY_BEAT_SCHEDULE["retention-purge"] = {
    "task": "harry_realtime.purge_retained_data",
    "schedule": float(env("RETENTION_INTERVAL_SECONDS", "3600")),
}

# Deadline reminders (events/reminders.py): home tasks due within 24 h and within 1 h.
CELERY_BEAT_SCHEDULE["events-deadline-reminders"] = {
    "task": "events.send_deadline_reminders",
    "schedule": float(env("REALTIME_DEADLINE_REMINDER_SECONDS", "300")),
}
