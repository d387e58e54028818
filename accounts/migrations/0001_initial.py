"""ApiKey moves here from documents: the model's state only; the table documents made stays."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("documents", "0003_api_key"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ApiKey",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(max_length=200)),
                        ("prefix", models.CharField(db_index=True, help_text="First characters, to recognise a key.", max_length=12)),
                        ("key_hash", models.CharField(max_length=64, unique=True)),
                        ("scope", models.CharField(choices=[("read", "Read (list, retrieve, search, ask)"), ("write", "Read and write")], default="read", max_length=8)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("last_used_at", models.DateTimeField(blank=True, null=True)),
                        ("revoked_at", models.DateTimeField(blank=True, null=True)),
                        ("user", models.ForeignKey(blank=True, help_text="Optional: the person responsible for this key.", null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="api_keys", to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        "verbose_name": "API key",
                        "ordering": ["-created_at"],
                        "db_table": "documents_apikey",
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
