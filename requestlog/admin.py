"""The read-only request log and aggregate viewers, and the usage summary page."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.functional import cached_property

from fibonacci import addresses

from .models import CacheOutcome, EdgeLogPosition, RequestAggregate, RequestLog
from .summary import CHART_HEIGHT, CHART_MARGIN, CHART_WIDTH, usage_summary

# Below this estimate an exact count is cheap and more useful than a guess.
EXACT_COUNT_BELOW = 10_000
SUMMARY_DEFAULT_DAYS = 7
SUMMARY_MAX_DAYS = 366


def _estimated_rows(queryset: QuerySet[Any]) -> int:
    # PostgreSQL's planner statistics: the table's reltuples when unfiltered,
    # else the planner's row estimate for the filtered query. -1: never analyzed.
    with connections[queryset.db].cursor() as cursor:
        if not queryset.query.where:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [queryset.model._meta.db_table],
            )
            row = cursor.fetchone()
            return int(row[0]) if row else -1
        sql, params = queryset.order_by().query.sql_with_params()
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
        return int(plan[0]["Plan"]["Plan Rows"])


class EstimatedCountPaginator(Paginator):
    """Uses PostgreSQL's estimate for large counts instead of counting every row.

    Small results, and every result on other databases, are counted exactly.
    """

    @cached_property
    def count(self) -> int:
        """The estimated number of rows (exact below EXACT_COUNT_BELOW or off PostgreSQL)."""
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and connections[queryset.db].vendor == "postgresql":
            estimate = _estimated_rows(queryset)
            if estimate >= EXACT_COUNT_BELOW:
                return estimate
        return super().count


class StatusClassFilter(admin.SimpleListFilter):
    """Filters by the first digit of the status: 2xx, 3xx, 4xx, 5xx."""

    title = "status class"
    parameter_name = "status_class"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(first), f"{first}xx") for first in (2, 3, 4, 5)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value not in {"2", "3", "4", "5"}:
            return queryset
        first = int(value)
        return queryset.filter(status__gte=first * 100, status__lt=(first + 1) * 100)


class CacheOutcomeFilter(admin.SimpleListFilter):
    """Filters by whether nginx's cache answered; "none" is the empty value."""

    title = "cache"
    parameter_name = "cache"
    _NONE = "none"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(outcome.value or self._NONE, outcome.label) for outcome in CacheOutcome]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == self._NONE:
            return queryset.filter(cache=CacheOutcome.NONE)
        if value in CacheOutcome.values:
            return queryset.filter(cache=value)
        return queryset


def _exact_client_search(
    queryset: QuerySet[Any], term: str, *, otherwise: Callable[[str], QuerySet[Any]]
) -> QuerySet[Any]:
    # Exact matches only, on the client_ip index: an address in any spelling
    # finds the rows the log wrote for it; anything else goes to `otherwise`.
    stored = addresses.stored(term, anonymize=settings.FIB_LOG_IP_ANONYMIZE)
    if term == addresses.UNKNOWN:  # the log's name for a client without an address
        stored = addresses.UNKNOWN
    if stored is None:
        return otherwise(term)
    return queryset.filter(client_ip=stored)


class SummaryPeriodForm(forms.Form):
    """The period of the usage summary: from `since` to `until`, both days included."""

    since = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until:
            if until < since:
                raise forms.ValidationError("The period must end on or after its first day.")
            if (until - since).days >= SUMMARY_MAX_DAYS:
                raise forms.ValidationError(f"Choose at most {SUMMARY_MAX_DAYS} days.")
        if until and until >= date.max:
            # The period ends at the start of the next day, which date.max has not.
            raise forms.ValidationError(f"The period must end before {date.max:%Y-%m-%d}.")
        return cleaned


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


class RecordsAdmin(admin.ModelAdmin):
    """Records the service wrote: read-only; superusers may delete them (retention)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)


@admin.register(RequestLog)
class RequestLogAdmin(RecordsAdmin):
    """Read-only: rows come from the API; deleting is for superusers and the prune command."""

    list_display = (
        "time",
        "client_ip",
        "endpoint",
        "arguments",
        "status",
        "duration_ms",
        "response_bytes",
        "rate_limited",
        "cache",
    )
    list_filter = (StatusClassFilter, "endpoint", "rate_limited", CacheOutcomeFilter, "time")
    search_fields = ("client_ip", "request_id")
    search_help_text = "An exact client IP or request id."
    date_hierarchy = "time"
    # Sorting by other columns would sort the whole table; time has its index.
    sortable_by = ("time",)
    list_per_page = 100
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    @admin.display(description="n / offset / index")
    def arguments(self, log: RequestLog) -> str:
        """The parsed numbers of the request (a dash where invalid or absent)."""
        if log.endpoint == "term":
            return f"index={log.index if log.index is not None else '-'}"
        if log.endpoint == "sequence":
            n = log.n if log.n is not None else "-"
            offset = log.offset if log.offset is not None else "-"
            return f"n={n} offset={offset}"
        return ""

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        # Exact matches only: they use the client_ip and request_id indexes,
        # where Django's default (icontains) would scan every row.
        term = search_term.strip()
        if not term:
            return queryset, False
        found = _exact_client_search(
            queryset, term, otherwise=lambda rid: queryset.filter(request_id=rid)
        )
        return found, False

    def get_urls(self) -> list[URLPattern]:
        summary = path(
            "summary/",
            self.admin_site.admin_view(self.summary_view),
            name="requestlog_requestlog_summary",
        )
        return [summary, *super().get_urls()]

    def summary_view(self, request: HttpRequest) -> HttpResponse:
        """The usage summary for a chosen period (the last 7 days by default)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        today = timezone.now().date()
        initial = {"since": today - timedelta(days=SUMMARY_DEFAULT_DAYS - 1), "until": today}
        form = SummaryPeriodForm(request.GET if "since" in request.GET else initial)
        summary = None
        if form.is_valid():
            summary = usage_summary(
                since=_day_start(form.cleaned_data["since"]),
                until=_day_start(form.cleaned_data["until"] + timedelta(days=1)),
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Request log: usage summary",
            "form": form,
            "summary": summary,
            "edge_logs": EdgeLogPosition.objects.order_by("path"),
            "chart": {"width": CHART_WIDTH, "height": CHART_HEIGHT, "margin": CHART_MARGIN},
            "quick_periods": [
                (days, today - timedelta(days=days - 1), today) for days in (1, 7, 30, 90)
            ],
        }
        return TemplateResponse(request, "admin/requestlog/requestlog/summary.html", context)


@admin.register(RequestAggregate)
class RequestAggregateAdmin(RecordsAdmin):
    """Read-only: what the edge counted per client and minute instead of logging each request."""

    list_display = ("minute", "client_ip", "reason", "status", "count")
    list_filter = ("reason", StatusClassFilter, "minute")
    search_fields = ("client_ip",)
    search_help_text = "An exact client IP."
    date_hierarchy = "minute"
    sortable_by = ("minute",)
    list_per_page = 100
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        found = _exact_client_search(queryset, term, otherwise=lambda _: queryset.none())
        # The edge counts an IPv6 client by its /64 (the budget key), kept so
        # unless anonymized: an address finds its network's counts too.
        if addresses.canonical(term) and not settings.FIB_LOG_IP_ANONYMIZE:
            found |= queryset.filter(
                client_ip=addresses.budget_key(addresses.canonical(term) or "")
            )
        return found, False
