"""Printing: plain-text tables, and the target checks collected for the final summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from loadgen import WrkResult


@dataclass(frozen=True)
class TargetCheck:
    """One measured figure against its target, for the summary table."""

    section: str
    case: str
    measured: str
    target: str
    passed: bool | None  # None: measured for information, no target

    @property
    def verdict(self) -> str:
        """PASS, FAIL, or a dash when there is no target."""
        if self.passed is None:
            return "-"
        return "PASS" if self.passed else "FAIL"


def print_table(*, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A title and a column-aligned table (first column left, the rest right)."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        parts = [first.ljust(widths[0])]
        parts += [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    print(f"\n{title}")
    print(line(headers))
    print(line(["-" * width for width in widths]))
    for row in rows:
        print(line(row))


def load_cells(result: WrkResult) -> list[str]:
    """req/s, p50, p99 and anomalies of one result, formatted."""
    anomalies = []
    if result.non_2xx:
        anomalies.append(f"{result.non_2xx} non-2xx")
    if result.socket_errors:
        anomalies.append(f"{result.socket_errors} socket errors")
    return [
        f"{result.requests_per_s:,.0f}",
        f"{result.p50_ms:.2f}",
        f"{result.p99_ms:.2f}",
        ", ".join(anomalies) or "-",
    ]


LOAD_HEADERS = ["req/s", "p50 ms", "p99 ms", "anomalies"]


def ratio_check(*, section: str, case: str, ratio: float, minimum: float | None) -> TargetCheck:
    """A ratio against an optional minimum."""
    return TargetCheck(
        section=section,
        case=case,
        measured=f"{ratio:.2f}",
        target=f">= {minimum:.2f}" if minimum is not None else "-",
        passed=None if minimum is None else ratio >= minimum,
    )


def report_ratio_table(
    *,
    section: str,
    title: str,
    results: Mapping[int, Mapping[str, WrkResult]],
    servers: Sequence[str],
    server_header: str,
    targets: Mapping[int, float | None],
) -> list[TargetCheck]:
    """Print one row per (n, server), the ratio of the last server to the one before it on
    the last row of each n, and return the ratio checks."""
    subject, baseline = servers[-1], servers[-2]
    rows, checks = [], []
    for n, best in results.items():
        ratio = best[subject].requests_per_s / best[baseline].requests_per_s
        check = ratio_check(
            section=section, case=f"{subject}/{baseline} n={n}", ratio=ratio, minimum=targets[n]
        )
        checks.append(check)
        for name in servers:
            rows.append([f"n={n}", name, *load_cells(best[name]), ""])
        rows[-1][-1] = f"{ratio:.2f} (target {check.target}) {check.verdict}"
    print_table(
        title=title, headers=["n", server_header, *LOAD_HEADERS, f"{subject}/{baseline}"], rows=rows
    )
    return checks


def print_summary(checks: Sequence[TargetCheck], errors: Sequence[str]) -> None:
    """The final table of every target, then any section that could not run."""
    print_table(
        title="== Summary",
        headers=["section", "case", "measured", "target", "verdict"],
        rows=[
            [check.section, check.case, check.measured, check.target, check.verdict]
            for check in checks
        ],
    )
    for error in errors:
        print(f"ERROR {error}")


@dataclass(frozen=True)
class Comparison:
    """A ratio of two rows' throughput to report for every n, with optional targets by n."""

    subject: str
    baseline: str
    targets: Mapping[int, float | None]


def report_versus_static(
    *,
    section: str,
    title: str,
    results: Mapping[int, Mapping[str, WrkResult]],
    rows: Sequence[str],
    static: str,
    comparisons: Sequence[Comparison] = (),
    static_targets: Mapping[str, Mapping[int, float]] | None = None,
) -> list[TargetCheck]:
    """One row per (n, name) with its throughput as a share of `static`'s in the same run.

    `comparisons` add a ratio between two rows (printed on the subject's row);
    `static_targets` (name -> n -> minimum share of static) make a row's share a
    checked target.
    """
    checks: list[TargetCheck] = []
    table: list[list[str]] = []
    for n, best in results.items():
        for name in rows:
            share = best[name].requests_per_s / best[static].requests_per_s
            minimum = (static_targets or {}).get(name, {}).get(n)
            share_cell = f"{share:.3f}"
            if minimum is not None:
                check = ratio_check(
                    section=section, case=f"{name}/{static} n={n}", ratio=share, minimum=minimum
                )
                checks.append(check)
                share_cell += f" ({check.target}) {check.verdict}"
            compared = []
            for comparison in comparisons:
                if comparison.subject != name:
                    continue
                ratio = best[name].requests_per_s / best[comparison.baseline].requests_per_s
                check = ratio_check(
                    section=section,
                    case=f"{name}/{comparison.baseline} n={n}",
                    ratio=ratio,
                    minimum=comparison.targets.get(n),
                )
                checks.append(check)
                compared.append(
                    f"{name}/{comparison.baseline} {ratio:.2f} (target {check.target}) "
                    f"{check.verdict}"
                )
            table.append([f"n={n}", name, *load_cells(best[name]), share_cell, "; ".join(compared)])
    print_table(
        title=title,
        headers=["n", "behind nginx", *LOAD_HEADERS, f"/{static}", "compared"],
        rows=table,
    )
    return checks
