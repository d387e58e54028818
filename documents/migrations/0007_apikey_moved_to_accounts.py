"""ApiKey now belongs to the accounts app (accounts.0001): the state only; no table is dropped."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("documents", "0006_document_original_file"),
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ApiKey")],
            database_operations=[],
        ),
    ]
