"""`db_worker` from django-tasks-db, plus ragsite's start-up hooks (resume work left behind)."""

from django_tasks_db.management.commands.db_worker import Command as BaseCommand

from ragsite.worker import send_worker_started


class Command(BaseCommand):
    def handle(self, *args, **options):
        send_worker_started()
        return super().handle(*args, **options)
