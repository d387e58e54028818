"""Where uploaded originals live: a folder (FILES_DIR, the default) or an S3-compatible bucket.

documents.files decides *when* a file is written or deleted (advisory locks, reference counts by
documents); a store only knows *how*: put bytes under their SHA-256, tell whether they are
there, stream them back, delete them, list what it holds. Both name a file by its hash alone, so
one copy serves every document with those bytes, and a name is only ever built from a hash
checked to be 64 hex digits, never from anything a user sent.

The bucket (FILES_S3_BUCKET) is reached through boto3, AWS's maintained S3 client, which signs
for AWS S3 and for the S3-compatible servers (MinIO, Ceph RGW, Cloudflare R2...). Every call is
bounded in time (FILES_S3_TIMEOUT per connect and per read) and in attempts
(FILES_S3_MAX_ATTEMPTS); a store that cannot be reached or refuses a request raises
``FileStoreUnavailable``, which the callers turn into a 503 or a clear ingest error.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

logger = logging.getLogger(__name__)

_HASH = re.compile(r"[0-9a-f]{64}")
# What an S3 error code says when the object (or the key) is simply not there.
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
# One page of a bucket listing (the S3 maximum); the sweep holds one page at a time.
LIST_PAGE_SIZE = 1000
# /ready answers within a few seconds whatever FILES_S3_TIMEOUT is.
READINESS_TIMEOUT = 3.0


class FileStoreUnavailable(Exception):
    """The store of originals could not be reached, timed out, or refused the request."""


def hash_checked(sha256: str) -> str:
    """``sha256`` when it is a SHA-256 in lowercase hex; ValueError for anything else."""
    if not _HASH.fullmatch(sha256 or ""):
        raise ValueError("not a SHA-256 hex digest")
    return sha256


@dataclass(frozen=True, slots=True)
class StoredFile:
    """An original opened for reading: ``stream`` has ``read(n)`` and ``close()``; ``size`` in bytes."""

    stream: BinaryIO
    size: int


class FileStore(Protocol):
    def has(self, sha256: str, size: int) -> bool: ...
    def put(self, sha256: str, data: bytes) -> None: ...
    def delete(self, sha256: str) -> bool: ...
    def open(self, sha256: str) -> StoredFile | None: ...
    def hashes(self) -> Iterator[str]: ...
    def check(self) -> dict: ...


# --- The data folder ---------------------------------------------------------------------------


class LocalStore:
    """FILES_DIR/ab/cd/<sha256>: one file per hash, two levels of folders to keep them small."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        hash_checked(sha256)
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def has(self, sha256: str, size: int) -> bool:
        path = self.path(sha256)
        return path.is_file() and path.stat().st_size == size

    def put(self, sha256: str, data: bytes) -> None:
        """Write to a temporary file in the same folder and rename it into place, so a reader
        never sees half a file and a crash leaves no partial file under a hash name."""
        path = self.path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def delete(self, sha256: str) -> bool:
        path = self.path(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        for folder in (path.parent, path.parent.parent):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
        return True

    def open(self, sha256: str) -> StoredFile | None:
        try:
            handle = self.path(sha256).open("rb")
        except FileNotFoundError:
            return None
        return StoredFile(handle, os.fstat(handle.fileno()).st_size)

    def hashes(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for path in self.root.glob("??/??/*"):
            if _HASH.fullmatch(path.name):
                yield path.name

    def check(self) -> dict:
        return {"store": "local"}


# --- An S3-compatible bucket -------------------------------------------------------------------


class _Body:
    """An S3 object's body as FileResponse reads it: ``read(n)`` and ``close()``, errors mapped.

    Only these two, on purpose: FileResponse then streams it in blocks, and neither it nor the
    WSGI server's file wrapper tries to seek, size or sendfile a network stream.
    """

    def __init__(self, body) -> None:
        self._body = body

    def read(self, size: int = -1) -> bytes:
        with _s3_errors("read"):
            return self._body.read(None if size is None or size < 0 else size)

    def close(self) -> None:
        self._body.close()


@contextmanager
def _s3_errors(action: str):
    """Turn the client's failures (network, timeouts, credentials, HTTP errors) into FileStoreUnavailable."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        logger.warning("file store: %s failed: %s %s", action, error.get("Code"), error.get("Message"))
        raise FileStoreUnavailable(f"the file store refused to {action} ({error.get('Code') or 'error'})") from exc
    except BotoCoreError as exc:
        logger.warning("file store: %s failed: %s", action, exc)
        raise FileStoreUnavailable(f"the file store could not {action}: {type(exc).__name__}") from exc


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING_CODES


class S3Store:
    """<bucket>/<prefix>/ab/<sha256>: one object per hash, written once, deleted with the last document."""

    def __init__(self, *, client, readiness_client, bucket: str, prefix: str) -> None:
        self.client = client
        self.readiness_client = readiness_client
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._key = re.compile(re.escape(self.prefix) + r"([0-9a-f]{2})/([0-9a-f]{64})")

    def key(self, sha256: str) -> str:
        hash_checked(sha256)
        return f"{self.prefix}{sha256[:2]}/{sha256}"

    def _size(self, sha256: str) -> int | None:
        """The stored object's size, or None when there is none."""
        with _s3_errors("look up a file"):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise
        return int(head["ContentLength"])

    def has(self, sha256: str, size: int) -> bool:
        return self._size(sha256) == size

    def put(self, sha256: str, data: bytes) -> None:
        """One PUT (atomic in S3: a reader sees the old object, none, or the whole new one).

        Content-MD5 makes the server refuse bytes damaged on the way; every S3-compatible server
        checks it, unlike the newer x-amz-checksum headers.
        """
        digest = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        with _s3_errors("store a file"):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.key(sha256),
                Body=data,
                ContentLength=len(data),
                ContentMD5=digest,
                ContentType="application/octet-stream",
            )

    def delete(self, sha256: str) -> bool:
        # DELETE answers 204 whether or not the object was there: ask first, for the count.
        if self._size(sha256) is None:
            return False
        with _s3_errors("delete a file"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))
        return True

    def open(self, sha256: str) -> StoredFile | None:
        with _s3_errors("read a file"):
            try:
                reply = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise
        return StoredFile(_Body(reply["Body"]), int(reply["ContentLength"]))

    def hashes(self) -> Iterator[str]:
        """Every hash stored under the prefix, a page of LIST_PAGE_SIZE keys at a time; keys of
        other shapes (another application's, a half-written multipart) are left alone."""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
        )
        with _s3_errors("list files"):
            for page in pages:
                for item in page.get("Contents", ()):
                    match = self._key.fullmatch(item["Key"])
                    if match and match.group(2).startswith(match.group(1)):
                        yield match.group(2)

    def check(self) -> dict:
        """A HeadBucket: cheap, and it fails on a wrong endpoint, credentials or bucket alike."""
        with _s3_errors("reach the bucket"):
            self.readiness_client.head_bucket(Bucket=self.bucket)
        return {"store": "s3", "bucket": self.bucket}


def _s3_client(*, timeout: float, attempts: int):
    # A session of its own: boto3's default session is not safe to share between threads.
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.FILES_S3_ENDPOINT_URL or None,
        region_name=settings.FILES_S3_REGION or None,
        # Empty: boto3's own chain (AWS_* variables, ~/.aws, an instance or pod role).
        aws_access_key_id=settings.FILES_S3_ACCESS_KEY_ID or None,
        aws_secret_access_key=settings.FILES_S3_SECRET_ACCESS_KEY or None,
        config=Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"total_max_attempts": attempts, "mode": "standard"},
            s3={"addressing_style": settings.FILES_S3_ADDRESSING_STYLE},
            # botocore adds CRC checksums to every upload by default since 1.36, which several
            # S3-compatible servers refuse or mishandle; Content-MD5 (S3Store.put) checks instead.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


@functools.cache
def _s3_store(configuration: tuple) -> S3Store:
    # Keyed by the whole configuration, so changed settings (tests) get a client of their own.
    return S3Store(
        client=_s3_client(timeout=settings.FILES_S3_TIMEOUT, attempts=settings.FILES_S3_MAX_ATTEMPTS),
        readiness_client=_s3_client(timeout=min(settings.FILES_S3_TIMEOUT, READINESS_TIMEOUT), attempts=1),
        bucket=settings.FILES_S3_BUCKET,
        prefix=settings.FILES_S3_PREFIX,
    )


def get_file_store() -> LocalStore | S3Store:
    """The bucket when FILES_S3_BUCKET is set, else the folder FILES_DIR."""
    if not settings.FILES_S3_BUCKET:
        return LocalStore(Path(settings.FILES_DIR))
    return _s3_store(
        (
            settings.FILES_S3_BUCKET,
            settings.FILES_S3_PREFIX,
            settings.FILES_S3_ENDPOINT_URL,
            settings.FILES_S3_REGION,
            settings.FILES_S3_ADDRESSING_STYLE,
            settings.FILES_S3_ACCESS_KEY_ID,
            settings.FILES_S3_SECRET_ACCESS_KEY,
            settings.FILES_S3_TIMEOUT,
            settings.FILES_S3_MAX_ATTEMPTS,
        )
    )


def check_file_store() -> dict:
    return get_file_store().check()


def readiness_register() -> None:
    """With a bucket configured, /ready checks it (a folder needs no probe: the disk is the app's)."""
    from ragsite.health import register_readiness_check

    if settings.FILES_S3_BUCKET:
        register_readiness_check("files_s3", check_file_store)
