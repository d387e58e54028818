# The embedding cache belongs to the vectors app now: only Django's model state leaves here; the
# table and its rows stay, and vectors' 0001 migration takes them over (and renames the table).

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('documents', '0007_apikey_moved_to_accounts'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='EmbeddingCache')],
            database_operations=[],
        ),
    ]
