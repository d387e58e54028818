"""`manage.py create_api_key NAME [--scope read|write] [--user USERNAME]`: prints the key once."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.auth import api_key_create
from accounts.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="what the key is for, e.g. 'ci-uploader'")
        parser.add_argument(
            "--scope",
            choices=ApiKey.Scope.values,
            default=ApiKey.Scope.READ,
            help="read: search and ask; write: also add, change and delete documents and crawls (default: read)",
        )
        parser.add_argument("--user", help="username responsible for the key (optional)")

    def handle(self, *args, name: str, scope: str, user: str | None, **options):
        if not name.strip():
            raise CommandError("the key needs a name")
        owner = None
        if user:
            try:
                owner = get_user_model().objects.get(username=user)
            except get_user_model().DoesNotExist:
                raise CommandError(f"no user named {user!r}") from None
        row, plain = api_key_create(name=name.strip(), scope=scope, user=owner)
        self.stderr.write(
            f"created {scope} key {row.name!r} (prefix {row.prefix}); store it now, it is not shown again:"
        )
        self.stdout.write(plain)
