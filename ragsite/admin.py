"""What every app's admin shares: the site's names, the cell formats of ragsite/static/ragsite/admin.css,
and deletion that counts what goes with the selected rows instead of listing each one.

The admin must read at a glance at 1280 px, with the navigation sidebar and the filters beside the
table: long titles, URLs and errors sit on one line cut with an ellipsis (the whole text in the
tooltip), states are coloured badges, progress is "done/total" over a thin bar. Nothing here
imports an app (ragsite is the bottom layer); the apps' admins call it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.auth import get_permission_codename
from django.db import models
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy

from ragsite.progress import counted

admin.site.site_header = "ragsite administration"
admin.site.site_title = "ragsite admin"
admin.site.index_title = "Sources, documents, crawls and keys"

# The most characters a clipped cell sends: CSS shows one line, the tooltip the rest.
CLIP_CHARS = 300
# Rows of a sample table on a change page (the first chunks of a document, pages of a crawl).
SAMPLE_ROWS = 20
# Selected rows named on a deletion's confirmation page; the rest are counted.
DELETION_LISTED = 50

TONES = ("ok", "busy", "warn", "bad", "quiet")


def clipped(text: str, *, css: str = "") -> SafeString:
    """Text on one line, cut with an ellipsis by CSS at the column's width; the tooltip holds it all."""
    text = " ".join(str(text or "").split())
    if len(text) > CLIP_CHARS:
        text = text[: CLIP_CHARS - 1] + "…"
    return format_html('<span class="rs-clip{}" title="{}">{}</span>', f" {css}" if css else "", text, text)


def with_sub(main, sub) -> SafeString:
    """A cell's value with small print under it (a title's URL, "3 queued · 1 failed")."""
    if sub in (None, ""):
        return format_html("{}", main)
    return format_html('{}<span class="rs-sub" title="{}">{}</span>', main, sub, sub)


def badge(label: str, tone: str) -> SafeString:
    """A coloured state: ok (green), busy (blue), warn (amber), bad (red), quiet (grey)."""
    assert tone in TONES, tone
    return format_html('<span class="rs-badge rs-{}">{}</span>', tone, label)


def progress(done: int, total: int) -> SafeString:
    """ "done/total" over a thin bar (no bar when there is nothing to do)."""
    if not total:
        return format_html('<span class="rs-progress">{}</span>', "0/0")
    share = min(100, round(100 * done / total))
    return format_html(
        '<span class="rs-progress" title="{}%"><span>{}/{}</span><span class="rs-bar"><span style="width: {}%">'
        "</span></span></span>",
        share,
        done,
        total,
        share,
    )


def ago(moment: datetime | None) -> SafeString | str:
    """How long ago, compactly ("just now", "5 min ago", "3 h ago", "2 days ago", then the date);
    the exact time in the tooltip. A third of a date column's width."""
    if moment is None:
        return "-"
    local = timezone.localtime(moment)
    seconds = (timezone.now() - moment).total_seconds()
    if seconds < 60:
        label = "just now" if seconds > -60 else local.strftime("%Y-%m-%d")
    elif seconds < 3600:
        label = f"{int(seconds // 60)} min ago"
    elif seconds < 86400:
        label = f"{int(seconds // 3600)} h ago"
    elif seconds < 60 * 86400:
        label = counted(int(seconds // 86400), "day") + " ago"
    else:
        label = local.strftime("%Y-%m-%d")
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', moment.isoformat(), local.strftime("%Y-%m-%d %H:%M:%S %Z"), label
    )


def joined(parts: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    if len(parts) <= 1:
        return "".join(parts)
    return f"{', '.join(parts[:-1])} and {parts[-1]}"


def row_id(value: str) -> int | None:
    """The id in a list filter's parameter, or None. ASCII digits within bigint only: "²" is a
    digit to ``str.isdigit`` and a crash to int()."""
    value = (value or "").strip()
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) < 2**63:
        return None
    return int(value)


class NarrowedFilter(admin.SimpleListFilter):
    """A list narrowed to the rows of one parent (the links of a change page: a document's chunks,
    a crawl job's pages), shown in the sidebar only while in use.

    A plain list_filter on the parent would list every parent in the sidebar. Subclasses set
    ``title``, ``parameter_name``, ``parent`` (the model) and ``lookup`` (the filter on the rows).
    """

    parent: type[models.Model]
    lookup: str

    def parent_pk(self):
        """The parameter as the parent's primary key (a UUID or a bigint), or None."""
        if isinstance(self.parent._meta.pk, models.UUIDField):
            try:
                return uuid.UUID(self.value().strip())
            except ValueError:
                return None
        return row_id(self.value())

    def lookups(self, request, model_admin):
        # Django applies only a filter that has choices: an unknown id gets one too (and no rows).
        if self.value() is None:
            return []
        pk = self.parent_pk()
        parent = self.parent._default_manager.filter(pk=pk).first() if pk else None
        return [(self.value(), str(parent) if parent else f"no such {self.parent._meta.verbose_name}")]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        pk = self.parent_pk()
        return queryset.filter(**{self.lookup: pk}) if pk else queryset.none()


def changelist_url(model: type[models.Model], **filters) -> str:
    """The admin's list of ``model``, filtered (e.g. ``document__id__exact=7``)."""
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def change_link(obj: models.Model, label: str | None = None) -> SafeString | str:
    """A link to the object's change page (its text alone if the model is not in the admin)."""
    try:
        url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return label if label is not None else str(obj)
    return format_html('<a href="{}">{}</a>', url, clipped(label if label is not None else str(obj)))


def sample_table(
    columns: list[tuple[str, str]], rows: list[list], *, total: int, more_url: str, noun: str, latest: bool = False
) -> SafeString:
    """The first rows of a long list as a compact table, with a link to the whole (paginated) list.

    Replaces an inline on a change page: an inline renders every related row (a PDF's 2,000
    chunks made a page 36,000 px tall), this at most SAMPLE_ROWS. ``columns``: (header, CSS
    width, "" for a share of what is left); every cell is one line, cut with an ellipsis.
    ``latest``: the rows are the last ones, not the first.
    """
    if not total:
        return format_html('<p class="rs-empty">No {}.</p>', noun)
    widths = format_html_join("", '<col style="width: {}">', ((width or "auto",) for _, width in columns))
    head = format_html_join("", "<th>{}</th>", ((header,) for header, _ in columns))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows)
    )
    which = "latest" if latest else "first"
    shown = f"The {which} {len(rows)} of {counted(total, noun.rstrip('s'), noun)}" if total > len(rows) else ""
    link = format_html('<a href="{}">All {} in the list →</a>', more_url, counted(total, noun.rstrip("s"), noun))
    caption = format_html("{}{}{}", shown, " · " if shown else "", link)
    return format_html(
        '<div class="rs-sample"><table><colgroup>{}</colgroup><thead><tr>{}</tr></thead><tbody>{}</tbody></table>'
        "<p>{}</p></div>",
        widths,
        head,
        body,
        caption,
    )


class CountedDeletionAdmin(admin.ModelAdmin):
    """Deletion that names the selected rows and counts what goes with them, in a few queries.

    Django's confirmation page lists every related row (each chunk of each document: one line and
    one fetch apiece) and its message counts only the selected rows. Here the page names the
    first DELETION_LISTED rows and counts the rest and the cascade (``deleted_with``), and the
    message says what was deleted: "Deleted 3 documents and 210 chunks."
    """

    actions = ["delete_selected"]  # this class's, which replaces the site-wide one of that name

    def deleted_with(self, queryset) -> dict[type[models.Model], int]:
        """How many rows of each other model are deleted with these (counted by the database)."""
        raise NotImplementedError

    def deletion_refused(self, queryset) -> str:
        """Why these rows may not be deleted now (shown as a warning; nothing is deleted), or ""."""
        return ""

    def delete_queryset(self, request, queryset) -> Counter:
        """Delete the rows; returns how many of each model went (the selected model included)."""
        _, per_label = queryset.delete()
        return Counter({self._model_for(label): count for label, count in per_label.items() if count})

    def get_deleted_objects(self, objs, request):
        queryset = (
            objs
            if isinstance(objs, models.QuerySet)
            else self.model._default_manager.filter(pk__in=[obj.pk for obj in objs])
        )
        total = queryset.count()
        named = [change_link(obj) for obj in queryset[:DELETION_LISTED]]
        if total > len(named):
            named.append(f"… and {total - len(named):,} more")
        counts = {self.model: total, **self.deleted_with(queryset)}
        model_count = {model._meta.verbose_name_plural: count for model, count in counts.items() if count}
        perms_needed = {
            str(model._meta.verbose_name)
            for model, count in counts.items()
            if count and not request.user.has_perm(f"{model._meta.app_label}.{self._delete_codename(model)}")
        }
        return named, model_count, perms_needed, []

    @admin.action(permissions=["delete"], description=gettext_lazy("Delete selected %(verbose_name_plural)s"))
    def delete_selected(self, request, queryset):
        if refusal := self.deletion_refused(queryset):
            self.message_user(request, refusal, messages.WARNING)
            return None
        if not request.POST.get("post"):
            return django_delete_selected(self, request, queryset)  # the confirmation page
        _, model_count, perms_needed, protected = self.get_deleted_objects(queryset, request)
        if perms_needed or protected:
            return django_delete_selected(self, request, queryset)  # refuses, as Django does
        self.log_deletions(request, queryset)
        deleted = self.delete_queryset(request, queryset)
        self.message_user(request, deletion_message(self.model, deleted, order=list(model_count)), messages.SUCCESS)
        return None

    @staticmethod
    def _delete_codename(model) -> str:
        return get_permission_codename("delete", model._meta)

    @staticmethod
    def _model_for(label: str) -> type[models.Model]:
        from django.apps import apps

        return apps.get_model(label)


def deletion_message(model: type[models.Model], deleted: Counter, *, order: list[str] = ()) -> str:
    """ "Deleted 3 documents and 210 chunks." The selected model first, then the others in
    ``order`` (verbose plural names, as on the confirmation page), or that nothing was deleted."""
    if not deleted.get(model):
        return f"Nothing deleted: the selected {model._meta.verbose_name_plural} were already gone."
    rank = {str(name): n for n, name in enumerate(order)}
    others = sorted(
        (m for m in deleted if m is not model and deleted[m]),
        key=lambda m: rank.get(str(m._meta.verbose_name_plural), len(rank)),
    )
    parts = [counted(deleted[m], str(m._meta.verbose_name), str(m._meta.verbose_name_plural)) for m in [model, *others]]
    return f"Deleted {joined(parts)}."
