"""The API-key table takes its app's name: a rename in place, rows and constraints kept."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        # After documents has let go of the model, so no state names the old table twice.
        ("documents", "0007_apikey_moved_to_accounts"),
    ]

    operations = [
        migrations.AlterModelTable(name="apikey", table=None),
    ]
