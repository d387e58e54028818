"""Keep each chunk's search_vector inline in the table row (STORAGE MAIN) instead of in TOAST.

A chunk's tsvector is 1.5-2 kB, so with the default storage PostgreSQL moves it out of line and
every keyword candidate costs a TOAST index lookup plus extra page reads just to score it:
measured at 100k chunks, reading the vectors of half the table took 675 ms out of line and 137 ms
inline. MAIN makes PostgreSQL push the chunk's text out of line first (only the page of results
shown needs the text, for snippets). It changes only how rows are stored, not what they hold;
rows written before this migration keep their old layout until they are rewritten.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("documents", "0001_initial"),
        ("search", "0001_keyword_stats"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE documents_chunk ALTER COLUMN search_vector SET STORAGE MAIN",
            reverse_sql="ALTER TABLE documents_chunk ALTER COLUMN search_vector SET STORAGE EXTENDED",
        ),
    ]
