"""`db_worker` from django-tasks-db, plus ragsite's start-up hooks (resume work left behind)."""

from django_tasks_db.management.commands.db_worker import Command as BaseCommand

from ragsite.worker import send_worker_started, start_worker_periodic


class Command(BaseCommand):
    def handle(self, *args, **options):
        send_worker_started()
        start_worker_periodic()
        return super().handle(*args, **options)
