"""Uploaded originals, kept content-addressed: FILES_DIR/ab/cd/<sha256>, or an S3-compatible
bucket's <prefix>/ab/<sha256> when FILES_S3_BUCKET is set (documents.filestore: the stores).

One copy per distinct file, however many documents name it. A path or key is only ever built
from a hash this module computed (or checked to be 64 hex digits), never from a name a user sent.
This module alone decides when a file is written or deleted, whatever the store.

Writers and the deleter agree through a PostgreSQL advisory lock on the hash, held to the end
of their transactions:
- an ingest takes it shared, then writes the file if it is missing, then commits the document
  that names it;
- ``file_release`` takes it exclusive, and deletes the file only if no committed document names
  it.
So a release never deletes a file that an ingest in flight is about to reference: it waits for
that ingest's commit and then sees the reference (or, had it gone first, the ingest writes the
file again). An ingest that rolls back leaves its file unreferenced; ``files_sweep`` (the
``files_sweep`` command) deletes those.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from documents.filestore import LocalStore, StoredFile, get_file_store, hash_checked
from documents.models import Document

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Original:
    """An uploaded file's bytes and what the uploader said about them, before it is stored."""

    data: bytes
    name: str
    content_type: str
    sha256: str

    @classmethod
    def of(cls, data: bytes, name: str, content_type: str) -> Original:
        return cls(data, name, content_type or "application/octet-stream", hashlib.sha256(data).hexdigest())


def file_path(sha256: str) -> Path:
    """Where the file with this hash lives in FILES_DIR; ValueError for anything but a SHA-256 in hex."""
    return LocalStore(Path(settings.FILES_DIR)).path(sha256)


def _lock_key(sha256: str) -> int:
    # The one-bigint form: PostgreSQL keeps it apart from the two-int4 locks of ingests
    # (documents.services._lock_document_identities).
    return int.from_bytes(bytes.fromhex(sha256)[:8], "big", signed=True)


def _lock(sha256: str, *, shared: bool) -> None:
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s::bigint)", [_lock_key(sha256)])


def file_keep(data: bytes, sha256: str) -> None:
    """Store ``data`` under its hash unless it is there already; inside the caller's transaction.

    The lock comes first, then the look-up: a release waiting for this lock sees this
    transaction's document once it commits. FileStoreUnavailable when the store cannot be
    reached: the caller's transaction then fails, and no document names a file it lacks.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("file_keep must run inside the transaction that stores the document")
    store = get_file_store()
    _lock(sha256, shared=True)
    if store.has(sha256, len(data)):
        return
    store.put(sha256, data)


def file_release(sha256: str) -> bool:
    """Delete the file if no document names it any more; True if it was deleted."""
    try:
        hash_checked(sha256)
    except ValueError:
        return False
    store = get_file_store()
    with transaction.atomic():
        _lock(sha256, shared=False)
        if Document.objects.filter(file_sha256=sha256).exists():
            return False
        return store.delete(sha256)


def file_release_on_commit(sha256: str) -> None:
    if sha256:
        transaction.on_commit(lambda: _release_logged(sha256))


def _release_logged(sha256: str) -> None:
    try:
        file_release(sha256)
    except Exception:
        # The document is gone either way; the file is left for files_sweep.
        logger.exception("could not release the original file %s", sha256)


def files_sweep() -> int:
    """Delete every stored file that no document names (left by ingests that rolled back).

    The store lists what it holds (a bucket a page at a time); each file goes through
    ``file_release``, so a file an ingest in flight is about to name is kept.
    """
    return sum(1 for sha256 in get_file_store().hashes() if file_release(sha256))


def file_open(document: Document) -> StoredFile | None:
    """The document's original opened for reading, or None (no original, or lost from the store).

    FileStoreUnavailable when the store cannot be reached.
    """
    if not document.file_sha256:
        return None
    try:
        return get_file_store().open(document.file_sha256)
    except ValueError:
        return None


# Every way a document goes (the API, the admin's bulk delete, a source's cascade) sends
# post_delete; the file follows once the deletion is committed.
@receiver(post_delete, sender=Document, dispatch_uid="documents.files.document_deleted")
def on_document_deleted(sender, instance: Document, **kwargs) -> None:
    file_release_on_commit(instance.file_sha256)
