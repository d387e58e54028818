"""Settings for the test suite: the real settings module, with test-friendly defaults.

Tests use real PostgreSQL (DATABASE_URL, or the embedded server under a throwaway data
folder) and real Qdrant local mode on disk. Tasks run inline so a test sees their effect.
"""

import os
import tempfile

os.environ.setdefault("DJANGO_ENV", "test")
os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="ragsite-test-"))
os.environ.setdefault("TASKS_BACKEND", "immediate")
# The ONNX export of the embedder is built once (by `make setup`, or lazily) and shared by every
# test session and the processes tests start, instead of once per throwaway DATA_DIR.
os.environ.setdefault(
    "EMBEDDING_MODEL_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "var", "models")
)
os.environ.setdefault("EMBEDDED_WORKER", "false")
os.environ.setdefault("CRAWL_ALLOW_PRIVATE_ADDRESSES", "true")
os.environ.setdefault("CRAWL_DEFAULT_DELAY", "0")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("THROTTLE_ANON", "100000/min")
os.environ.setdefault("THROTTLE_KEY", "100000/min")
os.environ.setdefault("THROTTLE_BAD_KEY", "100000/min")

from ragsite.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
