"""`manage.py files_sweep`: delete stored originals that no document names.

Deleting a document deletes its file after the commit; what is left behind is the file of an
ingest whose transaction rolled back after the file was written (documents.files), or of a
process killed between a commit and its release. Safe beside running ingests.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from documents.files import files_sweep


class Command(BaseCommand):
    help = "Delete stored original files that no document names (left by ingests that rolled back)."

    def handle(self, *args, **options):
        deleted = files_sweep()
        self.stdout.write(f"{deleted} file{'' if deleted == 1 else 's'} deleted")
