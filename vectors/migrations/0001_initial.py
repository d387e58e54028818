# Takes over documents' embedding cache with its rows: the table is renamed, not re-created, and
# its content type (and so the admin permissions granted on it) follows the model.

from django.db import migrations, models


def _content_type_follows(apps, schema_editor, old, new):
    ContentType = apps.get_model('contenttypes', 'ContentType')
    if not ContentType.objects.filter(app_label=new, model='embeddingcache').exists():
        ContentType.objects.filter(app_label=old, model='embeddingcache').update(app_label=new)


def forwards(apps, schema_editor):
    _content_type_follows(apps, schema_editor, 'documents', 'vectors')


def backwards(apps, schema_editor):
    _content_type_follows(apps, schema_editor, 'vectors', 'documents')


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('documents', '0008_embeddingcache_moved_to_vectors'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='EmbeddingCache',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('model', models.CharField(max_length=200)),
                        ('content_hash', models.CharField(max_length=64)),
                        ('dimension', models.PositiveIntegerField()),
                        ('vector', models.BinaryField()),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                    ],
                    options={
                        'constraints': [
                            models.UniqueConstraint(fields=('model', 'content_hash'), name='embedding_cache_unique')
                        ],
                    },
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    'ALTER TABLE documents_embeddingcache RENAME TO vectors_embeddingcache',
                    reverse_sql='ALTER TABLE vectors_embeddingcache RENAME TO documents_embeddingcache',
                ),
            ],
        ),
        migrations.RunPython(forwards, backwards),
    ]
