"""Drop the document-level search vector and its GIN index.

Full-text search over documents (the API's ``?q=``, the admin's search) reads the chunks' vectors
instead; keyword search always did. A tsvector holds at most 1 MB, so a vector over the whole text
made large documents (a 6.3 MB log, 2.4 MB of Markdown headings) impossible to store, and it
duplicated every chunk's vector on every write.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("documents", "0004_chunk_sync_attempts"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="document",
            name="document_search_vector_gin",
        ),
        migrations.RemoveField(
            model_name="document",
            name="search_vector",
        ),
    ]
