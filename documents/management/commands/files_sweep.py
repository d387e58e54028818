"""`manage.py files_sweep`: delete stored originals that no document names.

Deleting a document deletes its file after the commit; what is left behind is the file of an
ingest whose transaction rolled back after the file was written (documents.files), or of a
process killed between a commit and its release. Safe beside running ingests. Works on the
folder FILES_DIR or, with FILES_S3_BUCKET set, on the bucket (listed a page at a time).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from documents.files import files_sweep
from documents.filestore import FileStoreUnavailable


class Command(BaseCommand):
    help = "Delete stored original files that no document names (left by ingests that rolled back)."

    def handle(self, *args, **options):
        try:
            deleted = files_sweep()
        except FileStoreUnavailable as exc:
            # What was deleted before the outage stays deleted; a later run finishes the sweep.
            raise CommandError(f"{exc}; run files_sweep again once the store answers.") from exc
        self.stdout.write(f"{deleted} file{'' if deleted == 1 else 's'} deleted")
