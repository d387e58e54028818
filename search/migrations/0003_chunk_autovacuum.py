"""Vacuum and analyze the chunk table after 5% of its rows changed instead of PostgreSQL's 20%.

Re-ingesting and deleting documents leaves dead chunk rows, which every keyword query's bitmap
heap scan still visits until VACUUM removes them (and the GIN index keeps their entries). At 100k
chunks, after a 10-minute soak of ingests with as many deletions (17% of the rows dead, below the
default 20% trigger, so autovacuum had not run), keyword p50 was 15.8 ms and hybrid 18.3 ms; after
a VACUUM, 14.7 and 16.2 ms (README, Performance). Vacuuming a
chunk table at 5% costs a pass over its pages that often; the planner statistics follow too.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("documents", "0001_initial"),
        ("search", "0002_chunk_search_vector_inline"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE documents_chunk SET (autovacuum_vacuum_scale_factor = 0.05, "
            "autovacuum_analyze_scale_factor = 0.05)",
            reverse_sql="ALTER TABLE documents_chunk RESET (autovacuum_vacuum_scale_factor, "
            "autovacuum_analyze_scale_factor)",
        ),
    ]
