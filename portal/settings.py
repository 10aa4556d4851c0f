"""Settings for the Analysis Portal.

Everything is read from the environment (see README "Settings"); with nothing set the
portal runs with embedded defaults: SQLite and files under ``var/``, local Spark, the
portal's own Redis on a unix socket under ``var/redis/`` (bin/redis) and console e-mail.
Production sets at least SECRET_KEY, DATABASE_URL, REDIS_URL, ALLOWED_HOSTS, PORTAL_ORIGIN
and USERCONTENT_ORIGIN.
"""

import ipaddress
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import dj_database_url
import plotly
import pyspark
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from portal.beat import aligned
from portal.env import env_bool, env_bytes, env_float, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
#: Where the embedded defaults keep their state (database, files, kernels, Spark work dirs).
DATA_DIR = Path(env_str("PORTAL_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)


def _default_secret_key() -> str:
    # A key generated once and kept under var/, so the quick start needs no setup and
    # sessions survive restarts. Production sets SECRET_KEY or SECRET_KEY_FILE instead.
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env_secret("SECRET_KEY") or _default_secret_key()

#: The origin users browse the portal on, and the separate origin that serves untrusted
#: notebook HTML. They must differ in host (ideally in registrable domain): the content
#: origin sets no cookies and is only ever framed by the portal (docs/security.md,
#: "Notebook output: the user-content origin"). Locally: portal on localhost, content on
#: 127.0.0.1.
PORTAL_ORIGIN = env_str("PORTAL_ORIGIN", "http://localhost:8000").rstrip("/")
USERCONTENT_ORIGIN = env_str("USERCONTENT_ORIGIN", "http://127.0.0.1:8000").rstrip("/")
if urlsplit(PORTAL_ORIGIN).hostname == urlsplit(USERCONTENT_ORIGIN).hostname:
    raise ImproperlyConfigured("PORTAL_ORIGIN and USERCONTENT_ORIGIN must have different hosts")
USERCONTENT_HOST = urlsplit(USERCONTENT_ORIGIN).hostname
#: A signed content URL is valid for this many seconds (it is issued per page view, and
#: the frame loads at once); at most 120, so a leaked URL is soon worthless.
USERCONTENT_URL_MAX_AGE = env_int("USERCONTENT_URL_MAX_AGE", 120)
if not 0 < USERCONTENT_URL_MAX_AGE <= 120:
    raise ImproperlyConfigured(
        f"USERCONTENT_URL_MAX_AGE={USERCONTENT_URL_MAX_AGE}: between 1 and 120 seconds"
    )

ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS",
    sorted(
        {"localhost", "127.0.0.1", "[::1]", urlsplit(PORTAL_ORIGIN).hostname or "localhost"}
        | {USERCONTENT_HOST or "127.0.0.1"}
    ),
)
CSRF_TRUSTED_ORIGINS = [PORTAL_ORIGIN]  # never the user-content origin

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "csp",
    "portal",
    "jobs",
    "clusters",
    "quotas",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "api",
    "notify",
    "recorded",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Answers every request for the user-content host itself, before WhiteNoise (it serves
    # only the viewer's own static files, with the sandbox CSP) and before sessions, auth
    # and CSRF can touch it: that origin must never set or read a cookie.
    "portal.usercontent.UserContentMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

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
                "portal.context_processors.sandbox_status",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'portal.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The quick start's web, worker and beat share one SQLite file: wait for locks
    # instead of failing at once, and keep no persistent connections.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
# Concurrent test sessions on one machine each get their own test database.
DATABASES["default"]["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME") or None}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

# --- Sign-in (django-allauth) -------------------------------------------------------
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "dashboard"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_ADAPTER = "portal.accounts.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "portal.accounts.SocialAccountAdapter"
ACCOUNT_LOGIN_ON_PASSWORD_RESET = True
#: Whether anyone may create an account with a password; with it off, staff create users.
SIGNUP_OPEN = env_bool("SIGNUP_OPEN", True)
#: If set, only e-mail addresses in these domains may sign up or sign in through OIDC.
SIGNUP_ALLOWED_DOMAINS = [d.lower() for d in env_list("SIGNUP_ALLOWED_DOMAINS")]
#: Whenever anyone may sign up (open sign-up, or any address of the allowed domains), an
#: account can do nothing until its address is verified through the link e-mailed to it
#: (the quick start's console e-mail prints the link). Only when staff create every
#: account may ACCOUNT_EMAIL_VERIFICATION relax it ("optional" by default then).
ACCOUNT_EMAIL_VERIFICATION = (
    "mandatory"
    if SIGNUP_OPEN or SIGNUP_ALLOWED_DOMAINS
    else env_str("ACCOUNT_EMAIL_VERIFICATION", "optional")
)
# Failed sign-ins are rate limited per address and per IP (allauth's defaults); the
# counters live in the shared cache (Redis), so every web process sees them. /admin/login/
# goes through the same sign-in (portal.views.admin_login).
SOCIALACCOUNT_ONLY = False
SOCIALACCOUNT_PROVIDERS = {}
if env_str("OIDC_CLIENT_ID"):
    # One OpenID Connect provider (Google, Auth0, Keycloak...), switched on by settings.
    SOCIALACCOUNT_PROVIDERS["openid_connect"] = {
        "APPS": [
            {
                "provider_id": env_str("OIDC_PROVIDER_ID", "oidc"),
                "name": env_str("OIDC_NAME", "Single sign-on"),
                "client_id": env_str("OIDC_CLIENT_ID"),
                "secret": env_secret("OIDC_CLIENT_SECRET", ""),
                "settings": {"server_url": env_str("OIDC_SERVER_URL")},
            }
        ]
    }

# --- Security -----------------------------------------------------------------------
_HTTPS = PORTAL_ORIGIN.startswith("https://")
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and strips it from clients).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if _HTTPS else None
SECURE_SSL_REDIRECT = _HTTPS
SESSION_COOKIE_SECURE = _HTTPS
CSRF_COOKIE_SECURE = _HTTPS
# The __Host- prefix pins cookies to the exact portal host (no Domain, Path=/, Secure), so
# a sibling subdomain cannot toss cookies at us.
SESSION_COOKIE_NAME = "__Host-sessionid" if _HTTPS else "sessionid"
CSRF_COOKIE_NAME = "__Host-csrftoken" if _HTTPS else "csrftoken"
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if _HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _HTTPS
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SAMESITE = "Lax"
if _HTTPS:
    # HSTS preload is opt-in (SECURE_HSTS_PRELOAD): it is hard to undo, so it is an
    # operator's decision, not a default.
    SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# Portal pages run a strict CSP: no inline scripts, frames only from the content origin.
# style-src allows inline styles because plotly.js (the run-history chart) sets them.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "frame-src": [USERCONTENT_ORIGIN],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- Static files and uploads ---------------------------------------------------------
STATIC_URL = "static/"
# Uploads go through the storage API with server-made keys, never MEDIA_URL; point it at
# an empty directory so no development server can serve project files as "media".
MEDIA_URL = "media/"
MEDIA_ROOT = DATA_DIR / "media"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(DATA_DIR / "static")))
# plotly.js is served from the plotly package itself, never from a CDN.
PLOTLY_PACKAGE_DATA = Path(plotly.__file__).resolve().parent / "package_data"
STATICFILES_DIRS = [BASE_DIR / "static", ("plotly", PLOTLY_PACKAGE_DATA)]
WHITENOISE_USE_FINDERS = not env_bool("STATIC_MANIFEST", False)

_storage_options = {}
if env_str("AWS_STORAGE_BUCKET_NAME"):
    _storage_options = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("AWS_STORAGE_BUCKET_NAME"),
            "region_name": env_str("AWS_S3_REGION_NAME") or None,
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
            "addressing_style": env_str("AWS_S3_ADDRESSING_STYLE") or None,
            "signature_version": "s3v4",
            "default_acl": None,
            # Outputs are private: the portal streams them after a permission check.
            "querystring_auth": True,
            "querystring_expire": 300,
            "file_overwrite": False,
        },
    }
else:
    _storage_options = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": env_str("PORTAL_STORAGE_DIR", str(DATA_DIR / "storage")),
            "base_url": None,
        },
    }
STORAGES = {
    "default": _storage_options,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env_bool("STATIC_MANIFEST", False)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
#: The largest notebook a user may upload, in bytes (checked in the form; the proxy in
#: front should cap request bodies too).
NOTEBOOK_MAX_BYTES = env_int("NOTEBOOK_MAX_BYTES", 20 * 1024 * 1024)
# Uploads larger than this go to a temporary file instead of memory (Django's default).
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_NUMBER_FILES = 5
# The first handler keeps no file past NOTEBOOK_MAX_BYTES (the form then says so), so a
# 200 MB upload is never written whole to a temporary file; then Django's two.
FILE_UPLOAD_HANDLERS = [
    "jobs.uploads.NotebookSizeLimit",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

# --- E-mail ---------------------------------------------------------------------------
if env_str("EMAIL_HOST"):
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = env_str("EMAIL_HOST")
    EMAIL_PORT = env_int("EMAIL_PORT", 587)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
#: Seconds an SMTP connection may block (Django's default is forever).
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Analysis Portal <portal@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Celery ---------------------------------------------------------------------------
#: Redis for Celery and the cache, as redis-py reads it: redis://, rediss:// or unix://.
#: The default is the portal's own Redis (bin/redis): a unix socket in a 0700 directory,
#: which no notebook and no local-cluster process can reach. Production uses a Redis
#: ACL user with a password (docker/compose.yml).
REDIS_URL = env_str("REDIS_URL", f"unix://{DATA_DIR / 'redis' / 'redis.sock'}")


def _broker_url(url: str) -> str:
    # Kombu names a unix socket "redis+socket://PATH" and its database "virtual_host".
    if not url.startswith("unix://"):
        return url
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    db = query.pop("db", ["0"])[0]
    auth = f"{parts.username or ''}:{parts.password}@" if parts.password else ""
    extra = "".join(f"&{k}={v[0]}" for k, v in query.items())
    return f"redis+socket://{auth}{parts.path}?virtual_host={db}{extra}"


CELERY_BROKER_URL = _broker_url(REDIS_URL)
#: The cache holds the sign-in rate-limit counters (allauth): shared by every web
#: process, so a limit holds across them.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env_str("REDIS_KEY_PREFIX", "portal"),
    }
}
CELERY_RESULT_BACKEND = None  # the database is the source of truth; no result backend
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Acknowledge after the task returns and reserve one message per process: a notebook run
# is long, and a worker must not sit on messages another worker could run.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A killed child's message is acknowledged, not redelivered: the reaper decides retries
# from the database (otherwise a notebook that runs its worker out of memory loops forever).
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Database connections live across tasks as across requests (CONN_MAX_AGE, health
# checks): portal.celery closes old ones around each task, so Celery's Django fix-up,
# which would reconnect for every task, is told to recycle them (almost) never.
CELERY_DB_REUSE_MAX = 2**31
#: Longest allowed job timeout, in seconds; a job's timeout is capped by it.
JOB_MAX_TIMEOUT_SECONDS = env_int("JOB_MAX_TIMEOUT_SECONDS", 24 * 3600)
# The run task's hard limit sits above the longest job timeout (the executor enforces the
# job's own timeout and cleans up first); Redis redelivers unacked messages only after the
# visibility timeout, which must exceed that hard limit or long runs would run twice
# (Read the Docs had exactly that incident).
CELERY_TASK_SOFT_TIME_LIMIT: int | None = JOB_MAX_TIMEOUT_SECONDS + 300
CELERY_TASK_TIME_LIMIT: int | None = JOB_MAX_TIMEOUT_SECONDS + 600
# The streams worker (CELERY_TIME_LIMITS=false in its environment: Procfile, compose) runs
# continuous runs, which never end by themselves: it has no task time limit. Its task,
# execute_stream_run, is acknowledged when it starts, so Redis's redelivery timeout does
# not apply either; a lost continuous run is the reaper's and the supervisor's.
if not env_bool("CELERY_TIME_LIMITS", True):
    CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT = None
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, int | str] = {
    "visibility_timeout": JOB_MAX_TIMEOUT_SECONDS + 3600
}
if env_str("REDIS_KEY_PREFIX"):
    # Lets several portals (or test sessions) share one Redis without sharing queues.
    CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = env_str("REDIS_KEY_PREFIX")
# Three queues, so that nothing short waits behind something long: "runs" (notebooks,
# minutes to hours), "clusters" (cluster starts, stops and syncs: seconds, calls to Spark
# and AWS; consumed on the local clusters' host) and "control" (dispatcher ticks, the
# reaper, e-mail: milliseconds), whose worker a cluster launch can no longer hold up.
CELERY_TASK_ROUTES = {
    "jobs.tasks.execute_run": {"queue": "runs"},
    # Continuous runs (issue 15) have a worker of their own: they never take batch capacity.
    "jobs.tasks.execute_stream_run": {"queue": "streams"},
    "clusters.tasks.*": {"queue": "clusters"},
}
CELERY_TASK_DEFAULT_QUEUE = "control"
#: Seconds between dispatcher ticks. Ticks fall on multiples of it since the epoch
#: (``portal.beat.aligned``): with a divisor of 60 every minute boundary, hence every cron
#: slot, gets a tick at once; a slot off that grid (none with 5-field cron) starts at most
#: this late (plus queueing).
DISPATCH_INTERVAL = env_float("DISPATCH_INTERVAL", 2.0)
#: Seconds between reaper passes.
REAP_INTERVAL = env_float("REAP_INTERVAL", 15.0)
#: Seconds between syncs of local and of EMR clusters, and between expiry checks.
CLUSTER_SYNC_INTERVAL = env_float("CLUSTER_SYNC_INTERVAL", 10.0)
EMR_SYNC_INTERVAL = env_float("EMR_SYNC_INTERVAL", 60.0)
CLUSTER_LIFETIME_INTERVAL = env_float("CLUSTER_LIFETIME_INTERVAL", 30.0)
CELERY_BEAT_SCHEDULE = {
    "dispatch-due-runs": {
        "task": "jobs.tasks.dispatch_due_runs",
        "schedule": aligned(DISPATCH_INTERVAL),
        "options": {"expires": DISPATCH_INTERVAL},
    },
    "reap-runs": {
        "task": "jobs.tasks.reap_runs",
        "schedule": REAP_INTERVAL,
        "options": {"expires": REAP_INTERVAL},
    },
    "sync-local-clusters": {
        "task": "clusters.tasks.sync_local_clusters",
        "schedule": CLUSTER_SYNC_INTERVAL,
        "options": {"expires": CLUSTER_SYNC_INTERVAL},
    },
    "sync-emr-clusters": {
        "task": "clusters.tasks.sync_emr_clusters",
        "schedule": EMR_SYNC_INTERVAL,
        "options": {"expires": EMR_SYNC_INTERVAL},
    },
    "cluster-lifetimes": {
        "task": "clusters.tasks.cluster_lifetimes",
        "schedule": CLUSTER_LIFETIME_INTERVAL,
        "options": {"expires": CLUSTER_LIFETIME_INTERVAL},
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# --- Runs -----------------------------------------------------------------------------
#: A running run writes its heartbeat this often (seconds).
RUN_HEARTBEAT_INTERVAL = env_float("RUN_HEARTBEAT_INTERVAL", 5.0)
#: A RUNNING run whose heartbeat is older than this (seconds) is reaped as LOST.
RUN_STALE_AFTER = env_float("RUN_STALE_AFTER", 45.0)
#: A QUEUED run not claimed for this long (seconds) is enqueued again.
RUN_QUEUED_TIMEOUT = env_float("RUN_QUEUED_TIMEOUT", 120.0)
#: The partial output notebook of a running run is saved at most this often (seconds).
RUN_PARTIAL_SAVE_INTERVAL = env_float("RUN_PARTIAL_SAVE_INTERVAL", 5.0)
#: Base delay (seconds) of the exponential backoff between infrastructure retries.
RUN_RETRY_BACKOFF = env_float("RUN_RETRY_BACKOFF", 10.0)
#: Continuous jobs: seconds between supervisor passes (``jobs.services.streams``).
STREAM_SUPERVISE_INTERVAL = env_float("STREAM_SUPERVISE_INTERVAL", 5.0)
#: Continuous jobs: the restart delay after one failed run (seconds), doubled for each
#: further consecutive failure, and its cap.
STREAM_RESTART_BACKOFF = env_float("STREAM_RESTART_BACKOFF", 10.0)
STREAM_RESTART_BACKOFF_MAX = env_float("STREAM_RESTART_BACKOFF_MAX", 600.0)
#: Continuous jobs: seconds a run asked to stop has to end by itself before it is killed
#: as a cancel is (its queries' last micro-batch and checkpoint write take this long).
STREAM_STOP_TIMEOUT = env_float("STREAM_STOP_TIMEOUT", 120.0)
#: Continuous jobs: a running stream whose queries have reported nothing (no batch, no
#: idle event) for this many of its intervals (``Run.stream_interval``, measured from its
#: own reports) is flagged "stalled" on the operations page; before its first two
#: reports, after STREAM_STALLED_AFTER seconds (its start: session, first listing).
STREAM_STALLED_INTERVALS = env_float("STREAM_STALLED_INTERVALS", 3.0)
STREAM_STALLED_AFTER = env_float("STREAM_STALLED_AFTER", 120.0)
#: Continuous jobs' durable directories (checkpoints, sinks) on the streams workers' disk,
#: outside the sandboxes' scratch. A restart must see the same files: run the streams
#: workers on one host, or put this on a disk they share.
STREAMS_ROOT = Path(env_str("STREAMS_ROOT", str(DATA_DIR / "streams"))).resolve()
#: Continuous jobs on a transient EMR cluster (the job's Spark target "a transient EMR
#: cluster"), whose nodes cannot see STREAMS_ROOT: the S3 prefix of their checkpoints and
#: sinks, ``s3://bucket/prefix/`` (EMRFS on the cluster, boto3 on the worker). Empty: such
#: jobs are refused (docs/emr-iam.md: the clusters' instance profile must write it).
STREAMS_S3_URI = env_str("STREAMS_S3_URI")
#: Hours a continuous run's EMR cluster lives: before then its worker stops the run
#: gracefully and the supervisor starts the next run, on a fresh cluster, from the S3
#: checkpoint (so budgets are checked at each launch and no cluster lives for ever).
STREAM_EMR_LIFETIME_HOURS = env_int("STREAM_EMR_LIFETIME_HOURS", 24)
CELERY_BEAT_SCHEDULE["supervise-streams"] = {
    "task": "jobs.tasks.supervise_streams",
    "schedule": STREAM_SUPERVISE_INTERVAL,
    "options": {"expires": STREAM_SUPERVISE_INTERVAL},
}
#: Seconds between sweeps that remove deleted jobs' checkpoints and sinks
#: (``streams.prune_stream_dirs``): a deletion queues the removal at once, the sweep
#: catches a lost message.
STREAM_PRUNE_INTERVAL = env_float("STREAM_PRUNE_INTERVAL", 3600.0)
CELERY_BEAT_SCHEDULE["prune-stream-dirs"] = {
    "task": "jobs.tasks.prune_stream_dirs",
    "schedule": STREAM_PRUNE_INTERVAL,
    "options": {"expires": STREAM_PRUNE_INTERVAL},
}
# On the clusters worker: root, on the host of the local clusters, which write
# STREAMS_ROOT too (so it has it); its tasks take seconds, and a removal rarely more.
# Not the streams worker, whose slots running continuous runs hold for days.
CELERY_TASK_ROUTES["jobs.tasks.remove_stream_dirs"] = {"queue": "clusters"}
CELERY_TASK_ROUTES["jobs.tasks.prune_stream_dirs"] = {"queue": "clusters"}
#: Missed slots run by the "all" catch-up policy at most, per dispatcher pass.
CATCHUP_MAX_SLOTS = env_int("CATCHUP_MAX_SLOTS", 50)
#: Kernel the portal runs every notebook in, whatever its own metadata names.
PORTAL_KERNEL_NAME = "portal-pyspark"
#: Spark master for runs that target the embedded local Spark.
LOCAL_SPARK_MASTER = env_str("LOCAL_SPARK_MASTER", "local[*]")

# --- Sandbox (portal.sandbox) -----------------------------------------------------------
#: "bwrap" runs every notebook kernel and local-cluster process in a bubblewrap sandbox as
#: an unprivileged uid; "none" is an operator's explicit choice to run user code as the
#: worker's own user (every staff page then shows a red banner). When a sandbox cannot be
#: made and this is not "none", no notebook runs (fail closed).
KERNEL_SANDBOX = env_str("KERNEL_SANDBOX", "bwrap")
if KERNEL_SANDBOX not in ("bwrap", "none"):
    raise ImproperlyConfigured(
        f"KERNEL_SANDBOX={KERNEL_SANDBOX!r}: use bwrap (the default) or none"
    )
#: Where sandboxes keep their scratch directories (home, tmp, kernel sockets). Kept short:
#: a unix socket path has at most 107 bytes.
SANDBOX_ROOT = Path(env_str("SANDBOX_ROOT", str(DATA_DIR / "sandbox"))).resolve()
if len(str(SANDBOX_ROOT)) > 64:
    raise ImproperlyConfigured(
        f"SANDBOX_ROOT={SANDBOX_ROOT} is too long for unix socket paths: "
        "choose one under 64 characters"
    )
#: A portal user's sandboxes run as host uid SANDBOX_UID_BASE + user id; keep the range
#: free of real accounts.
SANDBOX_UID_BASE = env_int("SANDBOX_UID_BASE", 200000)
#: Limit sandboxes with cgroups where the host allows it (else rlimits).
SANDBOX_CGROUPS = env_bool("SANDBOX_CGROUPS", True)
#: Limits of one notebook run (kernel, Spark driver, Python workers): memory (the Spark
#: driver gets half of it), processes and threads, CPU cores.
KERNEL_MEMORY_LIMIT = env_bytes("KERNEL_MEMORY_LIMIT", "4g")
KERNEL_PIDS_LIMIT = env_int("KERNEL_PIDS_LIMIT", 1024)
KERNEL_CPU_LIMIT = env_float("KERNEL_CPU_LIMIT", 2.0)
#: Host directories notebooks may read besides the data root (comma-separated), e.g. a
#: shared data set on local disk.
SANDBOX_READ_ONLY_PATHS = env_list("SANDBOX_READ_ONLY_PATHS")
#: Where notebooks read pings (local path or URI) and where each user's batch views are
#: written (<root>/<user id>/; local roots are writable only by that user's sandboxes).
TELEMETRY_DATA_ROOT = env_str("TELEMETRY_DATA_ROOT", str(DATA_DIR / "sample" / "pings"))
TELEMETRY_VIEWS_ROOT = env_str("TELEMETRY_VIEWS_ROOT", str(DATA_DIR / "views"))
#: The landing directory of the streaming pings (``telemetry.PingsStream``; the generator
#: ``python -m telemetry.stream`` writes it), read-only in every sandbox. A local path:
#: continuous runs on the embedded local Spark read it from the worker's disk.
TELEMETRY_STREAM_ROOT = env_str("TELEMETRY_STREAM_ROOT", str(DATA_DIR / "sample" / "stream"))
#: Environment variables of the worker passed into notebook kernels (an allow-list: the
#: portal's secrets, database URL and AWS keys are never among them; the sandbox sets
#: HOME and TMPDIR).
KERNEL_ENV_ALLOWLIST = [
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "JAVA_HOME",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
] + env_list("KERNEL_ENV_EXTRA")

# --- Clusters ---------------------------------------------------------------------------
#: Backends users may choose, first is the default ("local" needs no cloud account).
CLUSTER_BACKENDS = env_list("CLUSTER_BACKENDS", ["local"])
#: Address local clusters bind to; anything but loopback needs spark.authenticate.
LOCAL_CLUSTER_BIND_HOST = env_str("LOCAL_CLUSTER_BIND_HOST", "127.0.0.1")
LOCAL_SPARK_VERSION = pyspark.__version__
LOCAL_CLUSTER_WORKER_CORES = env_int("LOCAL_CLUSTER_WORKER_CORES", 1)
LOCAL_CLUSTER_WORKER_MEMORY = env_str("LOCAL_CLUSTER_WORKER_MEMORY", "1g")
LOCAL_CLUSTER_EXECUTOR_MEMORY = env_str("LOCAL_CLUSTER_EXECUTOR_MEMORY", "768m")
#: Live local clusters allowed per user and on this host.
LOCAL_CLUSTER_MAX_PER_USER = env_int("LOCAL_CLUSTER_MAX_PER_USER", 2)
LOCAL_CLUSTER_MAX_PER_HOST = env_int("LOCAL_CLUSTER_MAX_PER_HOST", 4)
#: Workers per cluster (users; staff may exceed) and the lifetime bounds, in hours.
CLUSTER_MAX_SIZE = env_int("CLUSTER_MAX_SIZE", 4)
CLUSTER_MAX_LIFETIME_HOURS = env_int("CLUSTER_MAX_LIFETIME_HOURS", 24)
CLUSTER_DEFAULT_LIFETIME_HOURS = env_int("CLUSTER_DEFAULT_LIFETIME_HOURS", 8)
CLUSTER_MAX_EXTENSION_HOURS = env_int("CLUSTER_MAX_EXTENSION_HOURS", 8)
#: Seconds before expiry when the owner is warned by e-mail.
CLUSTER_EXPIRY_WARNING_SECONDS = env_int("CLUSTER_EXPIRY_WARNING_SECONDS", 3600)
#: Estimated price of one node-hour, for the cost column (currency of your choice).
CLUSTER_PRICE_PER_NODE_HOUR = env_float("CLUSTER_PRICE_PER_NODE_HOUR", 0.0)
#: Seconds a run waits for the fresh cluster it started to be READY.
CLUSTER_START_TIMEOUT = env_float("CLUSTER_START_TIMEOUT", 180.0)

# --- Spark Connect gateway (clusters.gateway, bin/gateway: nginx, TLS, one token a cluster)
#: Host and port users connect to (the connection string's sc://HOST:PORT); by default the
#: portal's host. The self-signed certificate is made for this host.
SPARK_CONNECT_GATEWAY_HOST = env_str(
    "SPARK_CONNECT_GATEWAY_HOST", urlsplit(PORTAL_ORIGIN).hostname or "localhost"
)
SPARK_CONNECT_GATEWAY_PORT = env_int("SPARK_CONNECT_GATEWAY_PORT", 15002)
#: Address the gateway listens on: every interface in production (users connect from
#: their machines); bin/quickstart sets 127.0.0.1.
SPARK_CONNECT_GATEWAY_BIND = env_str("SPARK_CONNECT_GATEWAY_BIND", "0.0.0.0")
#: Seconds between two looks at the READY clusters: a new cluster, a rotated token or a
#: terminated cluster reaches the gateway's routes within this time.
SPARK_CONNECT_GATEWAY_REFRESH = env_float("SPARK_CONNECT_GATEWAY_REFRESH", 2.0)
#: The gateway's certificate and key (PEM). Without them a self-signed certificate is made
#: under SPARK_CONNECT_GATEWAY_DIR, and the cluster page shows its fingerprint.
GATEWAY_TLS_CERT = env_str("GATEWAY_TLS_CERT")
GATEWAY_TLS_KEY = env_str("GATEWAY_TLS_KEY")
#: The gateway's generated configuration (it names tokens: 0700, never in a sandbox).
SPARK_CONNECT_GATEWAY_DIR = DATA_DIR / "gateway"

# --- Backfills and sweeps (jobs.services.groups) ------------------------------------------
#: Most slots one backfill may run, runs one sweep may start, and runs of either at once.
BACKFILL_MAX_SLOTS = env_int("BACKFILL_MAX_SLOTS", 2000)
SWEEP_MAX_RUNS = env_int("SWEEP_MAX_RUNS", 200)
GROUP_MAX_CONCURRENT = env_int("GROUP_MAX_CONCURRENT", 20)

# --- Spark UI of runs (jobs.spark_ui) and the Spark History Server (bin/spark-history) ----
#: A run's Spark event log is stored with it up to this size (bytes); a larger one is not
#: stored, and the run offers no history view.
SPARK_EVENT_LOG_MAX_BYTES = env_int("SPARK_EVENT_LOG_MAX_BYTES", 64 * 2**20)
#: Where the History Server reads event logs: the portal copies a run's stored log here
#: when its owner first opens its history. A cache: deleting it loses nothing.
SPARK_HISTORY_DIR = Path(env_str("SPARK_HISTORY_DIR", str(DATA_DIR / "spark-history")))
#: The History Server's address (loopback: only the portal's proxy talks to it).
SPARK_HISTORY_HOST = env_str("SPARK_HISTORY_HOST", "127.0.0.1")
SPARK_HISTORY_PORT = env_int("SPARK_HISTORY_PORT", 18080)
#: Seconds a first visit waits for the History Server to list a run's application.
SPARK_HISTORY_WAIT = env_float("SPARK_HISTORY_WAIT", 30.0)

#: Name of this deployment, in EMR cluster names and tags (keeps stage and prod apart).
PORTAL_ENVIRONMENT = env_str("PORTAL_ENVIRONMENT", "dev")
EMR_REGION = env_str("EMR_REGION", "us-west-2")
#: Only for tests against moto's server; real deployments leave it empty.
EMR_ENDPOINT_URL = env_str("EMR_ENDPOINT_URL")
EMR_MAX_ATTEMPTS = env_int("EMR_MAX_ATTEMPTS", 8)
EMR_LOG_URI = env_str("EMR_LOG_URI", "s3://analysis-portal-logs/emr/")
EMR_BOOTSTRAP_BUCKET = env_str("EMR_BOOTSTRAP_BUCKET", "analysis-portal-code")
EMR_BOOTSTRAP_KEY = env_str("EMR_BOOTSTRAP_KEY", "bootstrap/install-ssh-key.sh")
EMR_INSTANCE_TYPE = env_str("EMR_INSTANCE_TYPE", "m5.xlarge")
#: Core nodes on spot capacity: cheaper, but AWS may reclaim them.
EMR_CORE_SPOT = env_bool("EMR_CORE_SPOT", False)
EMR_APPLICATIONS = env_list("EMR_APPLICATIONS", ["Spark", "Hadoop", "JupyterEnterpriseGateway"])
#: Name of an EMR security configuration for the portal's clusters (e.g. one enforcing
#: IMDSv2 with hop limit 1: docs/emr-iam.md); empty for none.
EMR_SECURITY_CONFIGURATION = env_str("EMR_SECURITY_CONFIGURATION")
#: The instance profile of the portal's clusters and the EMR service role: dedicated ones
#: with the least-privilege policies of docs/emr-iam.md, never AWS's broad defaults.
EMR_JOB_FLOW_ROLE = env_str("EMR_JOB_FLOW_ROLE", "analysis-portal-emr-instance")
EMR_SERVICE_ROLE = env_str("EMR_SERVICE_ROLE", "analysis-portal-emr-service")
#: Release of the transient EMR clusters started for runs (when staff offer none).
EMR_DEFAULT_RELEASE = env_str("EMR_DEFAULT_RELEASE", "emr-7.5.0")
#: Bucket where runs on EMR put their input and output notebooks.
EMR_JOB_BUCKET = env_str("EMR_JOB_BUCKET", "analysis-portal-runs")
#: Only for tests against moto's server.
EMR_S3_ENDPOINT_URL = env_str("EMR_S3_ENDPOINT_URL")
# Clusters may write the job bucket and the log bucket; the bootstrap scripts they run as
# root at start must live in a bucket they cannot write (docs/emr-iam.md).
if EMR_BOOTSTRAP_BUCKET in (EMR_JOB_BUCKET, urlsplit(EMR_LOG_URI).hostname):
    raise ImproperlyConfigured(
        f"EMR_BOOTSTRAP_BUCKET={EMR_BOOTSTRAP_BUCKET!r} is also a bucket clusters write to: "
        "use a separate one"
    )
#: Seconds between polls of a run's EMR step.
EMR_STEP_POLL_INTERVAL = env_float("EMR_STEP_POLL_INTERVAL", 20.0)
EMR_PAPERMILL_BOOTSTRAP_KEY = env_str(
    "EMR_PAPERMILL_BOOTSTRAP_KEY", "bootstrap/install-papermill.sh"
)
#: The portal's ``telemetry`` package, zipped by ``manage.py upload_emr_bootstrap``, which
#: the papermill bootstrap puts on the clusters' Python path (``telemetry.streaming``'s
#: stop flag, ``PingsStream``, batch views).
EMR_TELEMETRY_KEY = env_str("EMR_TELEMETRY_KEY", "bootstrap/telemetry.zip")
#: An idle EMR cluster terminates itself after this many seconds (a backstop to expiry).
EMR_IDLE_TIMEOUT_SECONDS = env_int("EMR_IDLE_TIMEOUT_SECONDS", 3600)

# --- Fair share: per-user limits, budgets, output caps, retention, metrics ---------------
# Each per-user limit is a default here with an override per user in the admin (quotas app:
# "User limits"). Staff are exempt from a limit unless their override sets it. 0 disables a
# limit for everyone.
#: Jobs a user may own.
USER_MAX_JOBS = env_int("USER_MAX_JOBS", 50)
#: Runs a user may have queued or running at once (backfills and sweeps count apart).
USER_MAX_ACTIVE_RUNS = env_int("USER_MAX_ACTIVE_RUNS", 20)
#: Runs of one user that execute at the same time; the rest wait QUEUED, holding no worker.
USER_MAX_RUNNING_RUNS = env_int("USER_MAX_RUNNING_RUNS", 2)
#: Shortest interval (seconds) between two slots of a non-staff user's schedule.
USER_MIN_SCHEDULE_INTERVAL = env_int("USER_MIN_SCHEDULE_INTERVAL", 300)
#: Missed slots a user's job runs at most per dispatcher pass (catch-up "all").
USER_CATCHUP_MAX_SLOTS = env_int("USER_CATCHUP_MAX_SLOTS", 10)
#: Rates of the actions a user may repeat ("COUNT/PERIOD", django-ratelimit's syntax:
#: s, m, h, d, e.g. "20/m" or "100/2h"); counted in the shared cache (Redis).
RATE_LIMITS = {
    "run_now": env_str("RATE_LIMIT_RUN_NOW", "20/m"),
    "rerun": env_str("RATE_LIMIT_RERUN", "20/m"),
    "upload": env_str("RATE_LIMIT_UPLOAD", "10/m"),
    "inspect": env_str("RATE_LIMIT_INSPECT", "30/m"),
}
RATELIMIT_USE_CACHE = "default"
#: Monthly budgets per user: node-hours of clusters and per-run clusters, and their
#: estimated cost (CLUSTER_PRICE_PER_NODE_HOUR). 0 means no budget.
USER_MONTHLY_NODE_HOURS = env_float("USER_MONTHLY_NODE_HOURS", 500.0)
USER_MONTHLY_COST = env_float("USER_MONTHLY_COST", 0.0)
#: The owner is e-mailed once a month when their use passes this share of a budget (%).
BUDGET_WARNING_PERCENT = env_int("BUDGET_WARNING_PERCENT", 80)
#: Seconds between budget passes (quotas.tasks.warn_budgets): clusters launched by hand use
#: node-hours while they live, so their owners' budgets are checked on a clock. Runs check
#: their owner's budgets as they end.
BUDGET_CHECK_INTERVAL = env_float("BUDGET_CHECK_INTERVAL", 600.0)
CELERY_BEAT_SCHEDULE["warn-budgets"] = {
    "task": "quotas.tasks.warn_budgets",
    "schedule": BUDGET_CHECK_INTERVAL,
    "options": {"expires": BUDGET_CHECK_INTERVAL},
}
#: Stream output (stdout, stderr) kept per cell, in bytes; the rest is cut with a marker.
OUTPUT_STREAM_MAX_BYTES = env_bytes("OUTPUT_STREAM_MAX_BYTES", "10m")
#: Output kept per notebook, in bytes; past it the run ends FAILED for output size.
OUTPUT_NOTEBOOK_MAX_BYTES = env_bytes("OUTPUT_NOTEBOOK_MAX_BYTES", "100m")
#: Output notebooks larger than this are not rendered to HTML: the viewer offers the .ipynb.
OUTPUT_RENDER_MAX_BYTES = env_bytes("OUTPUT_RENDER_MAX_BYTES", "40m")
#: Characters of a failure's exception value and traceback kept in the database.
RUN_ERROR_MAX_CHARS = env_int("RUN_ERROR_MAX_CHARS", 20000)
#: Alert recipients: addresses of portal users, or of these domains; at most this many per
#: job; and at most ALERT_RATE e-mails per job ("COUNT/PERIOD").
ALERT_ALLOWED_DOMAINS = [d.lower() for d in env_list("ALERT_ALLOWED_DOMAINS")]
ALERT_MAX_RECIPIENTS = env_int("ALERT_MAX_RECIPIENTS", 10)
ALERT_RATE = env_str("ALERT_RATE", "12/h")
#: Days a run's output is kept (a job may override; 0 keeps outputs forever).
RUN_OUTPUT_RETENTION_DAYS = env_int("RUN_OUTPUT_RETENTION_DAYS", 90)
#: Seconds between retention passes (jobs.tasks.expire_run_outputs, on the control queue).
RETENTION_INTERVAL = env_float("RETENTION_INTERVAL", 3600.0)
# Beside its interval rather than in CELERY_BEAT_SCHEDULE above, which comes first.
CELERY_BEAT_SCHEDULE["expire-run-outputs"] = {
    "task": "jobs.tasks.expire_run_outputs",
    "schedule": RETENTION_INTERVAL,
    "options": {"expires": RETENTION_INTERVAL},
}
#: Bearer token of the Prometheus endpoint /metrics (empty: the endpoint answers 404).
METRICS_TOKEN = env_secret("METRICS_TOKEN")

# --- REST API ------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "api.permissions.HasScope",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.handle",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Analysis Portal API",
    "DESCRIPTION": "Schedule notebooks, follow their runs and launch Spark clusters. "
    "Authenticate with a personal API token: `Authorization: Bearer pap_...`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Runs and clusters both have a "state": name each set of states after its model.
    "ENUM_NAME_OVERRIDES": {"RunStateEnum": "jobs.models.Run.State"},
}
#: Hours an ``Idempotency-Key`` of "Run now" is remembered, per user.
IDEMPOTENCY_KEY_HOURS = env_int("IDEMPOTENCY_KEY_HOURS", 24)
CELERY_BEAT_SCHEDULE["forget-idempotency-keys"] = {
    "task": "api.tasks.forget_idempotency_keys",
    "schedule": 3600.0,
    "options": {"expires": 3600.0},
}

# --- Notifications (notify: chat through Apprise, signed webhooks) ---------------------------
#: Apprise schemes a target may use: chat services, and generic JSON. Apprise knows about
#: a hundred services (SMS, push, e-mail...); each one allowed is a way out of the portal,
#: and e-mail always goes through the portal's own, with its recipient rules. Microsoft
#: Teams is "workflow(s)://" (Power Automate) since Microsoft retired Office 365 connectors.
NOTIFY_APPRISE_SCHEMES = [
    s.lower()
    for s in env_list(
        "NOTIFY_APPRISE_SCHEMES",
        ["slack", "discord", "mmost", "mmosts", "workflow", "workflows", "json", "jsons"],
    )
]
#: Networks (CIDR) notifications may reach although they are not public, e.g. an internal
#: chat server's "10.1.2.0/24". Empty by default: webhook and Apprise URLs that resolve to
#: loopback, private, link-local (cloud metadata) or other non-global addresses are refused.
NOTIFY_ALLOWED_NETWORKS = env_list("NOTIFY_ALLOWED_NETWORKS")
for _network in NOTIFY_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"NOTIFY_ALLOWED_NETWORKS: {_exc}") from None
#: Seconds each of connect, send and read may take per attempt; at most 20 (the delivery
#: task's time limits assume it).
NOTIFY_TIMEOUT = env_float("NOTIFY_TIMEOUT", 10.0)
if not 0 < NOTIFY_TIMEOUT <= 20:
    raise ImproperlyConfigured(f"NOTIFY_TIMEOUT={NOTIFY_TIMEOUT}: between 0 and 20 seconds")
#: Attempts per delivery, and the exponential backoff between them (portal.backoff: base
#: and cap, in seconds): 30 s, 1, 2, 4, 8 min... a receiver may be down for a while.
NOTIFY_MAX_ATTEMPTS = env_int("NOTIFY_MAX_ATTEMPTS", 8)
NOTIFY_RETRY_BACKOFF = env_float("NOTIFY_RETRY_BACKOFF", 30.0)
NOTIFY_RETRY_MAX_DELAY = env_float("NOTIFY_RETRY_MAX_DELAY", 3600.0)
#: Targets per job besides e-mail (fair share: each is outbound traffic for the portal).
NOTIFY_MAX_TARGETS_PER_JOB = env_int("NOTIFY_MAX_TARGETS_PER_JOB", 5)
#: Seconds between passes that notice runs past their expected duration and resend
#: deliveries whose message was lost.
NOTIFY_TICK_INTERVAL = env_float("NOTIFY_TICK_INTERVAL", 30.0)
CELERY_BEAT_SCHEDULE["notify-tick"] = {
    "task": "notify.tasks.notify_tick",
    "schedule": NOTIFY_TICK_INTERVAL,
    "options": {"expires": NOTIFY_TICK_INTERVAL},
}
# A delivery waits on someone else's server (seconds): beside the other outbound calls on
# "clusters", never in front of the dispatcher's ticks on "control".
CELERY_TASK_ROUTES["notify.tasks.deliver_notification"] = {"queue": "clusters"}
# The webhook payload in the schema; webhooks are an OpenAPI 3.1 feature.
SPECTACULAR_SETTINGS["OAS_VERSION"] = "3.1.0"
SPECTACULAR_SETTINGS["WEBHOOKS"] = ["notify.schema.portal_event"]
#: Values a notebook records with scrapbook's ``glue`` (recorded.extract), read from the
#: output notebook as a run ends. They are user data kept in the database, so each is
#: bounded; what passes a bound is cut or dropped with a note, never failing the run.
RECORDED_MAX_VALUES = env_int("RECORDED_MAX_VALUES", 100)
RECORDED_NAME_MAX_CHARS = env_int("RECORDED_NAME_MAX_CHARS", 200)
RECORDED_TEXT_MAX_CHARS = env_int("RECORDED_TEXT_MAX_CHARS", 10_000)
RECORDED_TABLE_MAX_ROWS = env_int("RECORDED_TABLE_MAX_ROWS", 200)
RECORDED_TABLE_MAX_COLUMNS = env_int("RECORDED_TABLE_MAX_COLUMNS", 50)
#: A glued DataFrame is Parquet in base64: larger encoded ones are not decoded at all.
RECORDED_TABLE_MAX_BYTES = env_bytes("RECORDED_TABLE_MAX_BYTES", "2m")
RECORDED_FIGURE_MAX_BYTES = env_bytes("RECORDED_FIGURE_MAX_BYTES", "2m")
#: Output notebooks larger than this are not read for values (the worker parses it whole).
RECORDED_NOTEBOOK_MAX_BYTES = env_bytes("RECORDED_NOTEBOOK_MAX_BYTES", "40m")

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "papermill": {"level": "ERROR"}},
}
