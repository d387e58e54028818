"""`manage.py vectors_sync`: find and repair drift between PostgreSQL and Qdrant."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ragsite.progress import counted, progress_bar
from vectors.repair import vectors_repair
from vectors.stores import VectorStoreError
from vectors.sync import pending_chunks, vectors_sync_pending


class Command(BaseCommand):
    help = (
        "Re-queue pending/failed chunks, remove points with no chunk, re-index chunks with no point, "
        "re-chunk documents whose chunks do not match their text."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="report drift without repairing it")
        parser.add_argument(
            "--retry-quarantined",
            action="store_true",
            help="also retry documents quarantined after repeated sync failures (they are skipped otherwise)",
        )

    def handle(self, *args, dry_run: bool, retry_quarantined: bool, **options):
        try:
            found = vectors_repair(fix=not dry_run, progress=self.stdout.write, retry_quarantined=retry_quarantined)
        except VectorStoreError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"found: {found.pending_before} pending chunks, {found.requeued_failed} failed chunks, "
            f"{found.missing_points} indexed chunks with no point, {found.orphan_points} points with no chunk, "
            f"{len(found.mismatched_documents)} documents whose chunks do not match their text, "
            f"{found.quarantined} quarantined chunks"
            + ("" if retry_quarantined or not found.quarantined else " (left failed; --retry-quarantined retries them)")
        )
        if dry_run:
            return
        self.stdout.write(
            f"fixed: removed {found.orphan_points} orphan points; re-chunked {len(found.mismatched_documents)} "
            f"documents; re-queued {found.requeued_failed + found.missing_points} chunks"
        )
        todo = pending_chunks().count()
        with progress_bar(todo, "embed", "chunk") as bar:
            report = vectors_sync_pending(progress=bar.update)
        if report.skipped_locked:
            self.stdout.write("another process is syncing right now; it will index the pending chunks")
            return
        self.stdout.write(
            f"indexed {counted(report.indexed, 'chunk')} ({report.cache_hits} from cache), {report.failed} failed"
        )
        if report.stopped_by:
            raise CommandError(f"sync stopped: {report.stopped_by}")
