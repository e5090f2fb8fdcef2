"""What a run prints and decides: the verdict of each floor, the summary of one run, and the
issue table over all runs (each row's value, its baseline from the same run, the ratio and
the target), and the exit status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Targets of the issue table (bench/README.md), on a 2-core machine running everything.
FLOOR_RATIO = 0.65  # e2e deliveries/s / raw requests/s
FLOOR_P99_MS = 25.0  # ingest -> arrival at 100 events/s
FLOOR_ANALYZE_IDLE = 0.95  # e2e after an idle ANALYZE / before it
FLOOR_MANY_SUBSCRIPTIONS = 0.95  # e2e with 100k other subscriptions / without ("<= 5 % slower")
FLOOR_DEAD_HOST = 0.9  # healthy receiver's rate beside a dead host / alone
FLOOR_PGQUEUER = 1.0  # voicehooks e2e / the pgqueuer peer's

E2E_PHASES = (
    "e2e",
    "e2e_before_analyze",
    "e2e_after_analyze",
    "e2e_many_subscriptions",
    "dead_host_alone",
    "dead_host_early",
    "dead_host_later",
    "e2e_pgqueuer",
)
MEASURED_PHASES = ("raw", "e2e", "latency", *E2E_PHASES[1:], "raw_after")


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    raw_rates = [
        results[name]["requests_per_s"] for name in ("raw", "raw_after") if name in results
    ]
    raw_rate = max(raw_rates) if raw_rates else None  # the higher ceiling: the ratio errs low
    e2e_rate = results.get("e2e", {}).get("deliveries_per_s")
    found: dict[str, Any] = {}
    if raw_rate:
        found["raw_requests_per_s"] = raw_rate
        found["raw_spread"] = round(1 - min(raw_rates) / raw_rate, 3)
    if raw_rate and e2e_rate:
        found["ratio"] = round(e2e_rate / raw_rate, 3)
        found["ratio_floor"] = FLOOR_RATIO
        found["ratio_ok"] = found["ratio"] >= FLOOR_RATIO
    peer_rate = results.get("pgqueuer", {}).get("pgqueuer")
    if raw_rate and peer_rate:
        # No target: what a plain sender that keeps no history reaches of the same limit,
        # beside the e2e / raw row (the same cores carry its receiver and database too).
        found["peer_ratio"] = round(peer_rate / raw_rate, 3)
    p99 = results.get("latency", {}).get("ingest_to_arrival", {}).get("p99_ms")
    if p99 is not None:
        found["p99_ms"] = p99
        found["p99_floor_ms"] = FLOOR_P99_MS
        found["p99_ok"] = p99 <= FLOOR_P99_MS
    for name, key, floor in (
        ("analyze_idle", "ratio", FLOOR_ANALYZE_IDLE),
        ("many_subscriptions", "ratio", FLOOR_MANY_SUBSCRIPTIONS),
        ("dead_host", "ratio_early", FLOOR_DEAD_HOST),
        ("dead_host", "ratio_later", FLOOR_DEAD_HOST),
        ("pgqueuer", "ratio", FLOOR_PGQUEUER),
    ):
        if name in results:
            ratio = results[name].get(key)
            found[f"{name}_{key}_ok"] = ratio is not None and ratio >= floor
    # Beside a dead host the healthy host's shortfall within the bound is its rate's to show.
    found["complete"] = all(
        results[name]["complete"]
        for name in E2E_PHASES
        if name in results and name not in ("dead_host_early", "dead_host_later")
    )
    if "latency" in results:
        lat = results["latency"]
        found["latency_complete"] = lat["arrived"] == lat["sent"]
    found["disturbed_phases"] = [
        name for name in MEASURED_PHASES if results.get(name, {}).get("cpu", {}).get("disturbed")
    ]
    return found


def exit_status(results: dict[str, Any]) -> int:
    """2 when deliveries are missing, 1 when a floor is missed, else 0."""
    found = results["verdict"]
    if not found["complete"] or found.get("latency_complete") is False:
        return 2
    if any(value is False for key, value in found.items() if key.endswith("_ok")):
        return 1
    return 0


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return f"{value}{unit}"


def print_summary(results: dict[str, Any], path: Path | None) -> None:
    rows: list[tuple[str, str]] = []
    raw, e2e, lat, verdict = (results.get(k, {}) for k in ("raw", "e2e", "latency", "verdict"))
    if raw:
        after = results.get("raw_after")
        rows += [
            ("raw limit (plain aiohttp client)", _fmt(verdict["raw_requests_per_s"], " req/s")),
            (
                "  at start / at end of the run",
                f"{_fmt(raw['requests_per_s'])} / "
                f"{_fmt(after['requests_per_s'] if after else None)} req/s"
                f" ({raw['requests']} requests x {raw['concurrency']} concurrent)",
            ),
        ]
    if e2e:
        rows += [
            ("e2e deliveries/s (first→last arrival)", _fmt(e2e["deliveries_per_s"], " /s")),
            (
                "e2e deliveries/s (first ingest→last arrival)",
                _fmt(e2e["deliveries_per_s_from_ingest"], " /s"),
            ),
            (
                "  delivered distinct / events",
                f"{e2e['received_distinct']} / {e2e['events']} (duplicates {e2e['duplicates']})",
            ),
            ("  ingest (batches of 1000)", _fmt(e2e["ingest_events_per_s"], " events/s")),
            (
                "  first arrival after ingest start",
                _fmt(e2e["first_arrival_after_ingest_start_s"], " s"),
            ),
            ("  all outcomes recorded after", _fmt(e2e["all_recorded_after_ingest_start_s"], " s")),
        ]
    if "ratio" in verdict:
        ok = "ok" if verdict["ratio_ok"] else "BELOW FLOOR"
        rows.append(("ratio e2e / raw", f"{verdict['ratio']:.3f} (floor {FLOOR_RATIO}, {ok})"))
    if "peer_ratio" in verdict:
        rows.append(
            ("ratio pgqueuer peer e2e / raw", f"{verdict['peer_ratio']:.3f} (reference, no floor)")
        )
    if lat:
        lat_e2e = lat["ingest_to_arrival"]
        rows += [
            (
                f"latency at {lat['rate_per_s']:g}/s, ingest→arrival p50/p95/p99",
                " / ".join(_fmt(lat_e2e[f"p{q}_ms"]) for q in (50, 95, 99)) + " ms",
            ),
            ("  max", _fmt(lat_e2e["max_ms"], " ms")),
            (
                "  of which ingest ack p50/p99",
                f"{_fmt(lat['ingest_ack']['p50_ms'])} / {_fmt(lat['ingest_ack']['p99_ms'])} ms",
            ),
            (
                "  of which ack→arrival p50/p99",
                f"{_fmt(lat['ack_to_arrival']['p50_ms'])} / "
                f"{_fmt(lat['ack_to_arrival']['p99_ms'])} ms",
            ),
            ("  arrived / sent", f"{lat['arrived']} / {lat['sent']} (errors {lat['error_count']})"),
        ]
        slow = [e for e in lat.get("slowest", []) if e["ingest_to_arrival_ms"] > FLOOR_P99_MS]
        if slow:
            rows.append(
                (
                    f"  over {FLOOR_P99_MS:g} ms, sent at (UTC)",
                    ", ".join(
                        f"{e['sent_at_utc']} ({e['ingest_to_arrival_ms']:g}, ack {e['ack_ms']})"
                        for e in slow[:5]
                    ),
                )
            )
    if "p99_ms" in verdict:
        ok = "ok" if verdict["p99_ok"] else "ABOVE FLOOR"
        rows.append(("p99 verdict", f"{verdict['p99_ms']:.2f} ms (floor {FLOOR_P99_MS:g}, {ok})"))
    for name in E2E_PHASES[1:]:
        figures = results.get(name)
        if figures:
            rows.append(
                (
                    f"{name} ({figures['service']}) deliveries/s",
                    f"{_fmt(figures['deliveries_per_s'], ' /s')}, delivered"
                    f" {figures['received_distinct']} / {figures['events']}"
                    f" (duplicates {figures['duplicates']})",
                )
            )
    before, after = results["load_before"], results["load_after"]
    if verdict.get("raw_spread", 0) > 0.2:
        rows.append(
            (
                "WARNING",
                f"the raw limit moved {100 * verdict['raw_spread']:.0f}% between start and end:"
                " the machine's speed changed during the run, run again",
            )
        )
    if verdict.get("disturbed_phases"):
        rows.append(
            (
                "WARNING",
                f"other processes used >10% of the machine during "
                f"{', '.join(verdict['disturbed_phases'])}: figures disturbed, run again",
            )
        )
    code = results.get("code", {})
    rows.append(
        (
            "code",
            f"{code.get('commit', '?')}"
            + (
                f" + uncommitted changes in {len(code['modified'])} file(s) under src/"
                if code.get("modified")
                else ""
            ),
        )
    )
    pg = results.get("postgres", {})
    rows.append(
        (
            "postgres",
            f"{pg.get('server_version')}, autovacuum {pg.get('autovacuum')}, "
            f"synchronous_commit {pg.get('synchronous_commit')}, jit {pg.get('jit')}",
        )
    )
    rows.append(
        (
            "load average before / after",
            f"{before.get('loadavg')} / {after.get('loadavg')} ({before['cores']} cores)",
        )
    )
    for name in MEASURED_PHASES:
        cpu = results.get(name, {}).get("cpu")
        if not cpu:
            continue
        parts = ", ".join(f"{k} {v:.1f}" for k, v in cpu["cpu_s"].items())
        others = ", ".join(f"{k} {v:.1f}" for k, v in cpu["other_processes_top"].items())
        rows.append(
            (
                f"cpu s during {name} ({cpu['wall_s']} s wall)",
                f"{parts}; irq {_fmt(cpu.get('irq_softirq_cpu_s'))};"
                f" machine busy {_fmt(cpu.get('machine_busy_pct'))}%",
            )
        )
        rows.append(
            (
                "  other processes" + (" (DISTURBED)" if cpu["disturbed"] else ""),
                f"{cpu['other_processes_cpu_s']:.1f} cpu s" + (f": {others}" if others else ""),
            )
        )
        activity = results.get(name, {}).get("postgres_activity") or {}
        if activity.get("top"):
            busiest = "; ".join(
                f"{entry['busy']:.2f} {entry['statement'][:32]}… ({entry['state']})"
                for entry in activity["top"][:3]
            )
            rows.append(("  postgres busy with", busiest))
        if activity.get("autovacuum"):
            rows.append(("  autovacuum meanwhile", ", ".join(sorted(activity["autovacuum"]))))
    for name in ("e2e", "latency"):
        report = results.get(name, {}).get("profile") or {}
        statements = (report.get("worker_statements") or {}).get("statements") or {}
        for label, entry in list(statements.items())[:6]:
            calls = entry["calls"] or 1
            rows.append(
                (
                    f"  [{name}] worker SQL: {label[:44]}",
                    f"{entry['calls']} calls, {entry['seconds']:.2f} s, "
                    f"{1000 * entry['seconds'] / calls:.2f} ms avg, {entry['max_ms']:.0f} ms max, "
                    f"{entry['rows'] / calls:.1f} rows/call",
                )
            )
        for proc in ("worker", "api"):
            spy = report.get(f"{proc}_py_spy")
            if spy and spy["samples"]:
                top = ", ".join(f"{n} {p}%" for n, p in spy["self_pct"][:5])
                rows.append((f"  [{name}] {proc} top self (py-spy)", top))
    width = max(len(label) for label, _ in rows)
    print()
    print("voicehooks delivery benchmark")
    print("-" * (width + 40))
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")
    print("-" * (width + 40))
    print(f"results: {path}" if path else "results: not saved (--no-save)")


def _spread(values: list[float | None], unit: str = "") -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    low, high = min(known), max(known)
    return _fmt(low, unit) if low == high else f"{_fmt(low)}–{_fmt(high, unit)}"


# Each row: label, value and baseline (from one run's results), what the ratio must do.
ISSUE_ROWS: list[tuple[str, str, str, str, str, float | None, str]] = [
    # label, results key, value key, baseline key, ratio key, target, comparison
    (
        "e2e after idle ANALYZE vs before",
        "analyze_idle",
        "after",
        "before",
        "ratio",
        FLOOR_ANALYZE_IDLE,
        ">=",
    ),
    (
        "e2e with 100k other subscriptions vs without",
        "many_subscriptions",
        "with",
        "without",
        "ratio",
        FLOOR_MANY_SUBSCRIPTIONS,
        ">=",
    ),
    (
        "dead host, early: healthy rate vs alone",
        "dead_host",
        "early",
        "alone",
        "ratio_early",
        FLOOR_DEAD_HOST,
        ">=",
    ),
    (
        "dead host, after --dead-for: vs alone",
        "dead_host",
        "later",
        "alone",
        "ratio_later",
        FLOOR_DEAD_HOST,
        ">=",
    ),
    (
        "voicehooks e2e vs pgqueuer peer",
        "pgqueuer",
        "voicehooks",
        "pgqueuer",
        "ratio",
        FLOOR_PGQUEUER,
        ">=",
    ),
]


def _issue_values(results: dict[str, Any]) -> list[tuple[float | None, float | None, float | None]]:
    """(value, baseline, ratio) of each table row in one run; None where it did not run."""
    values = []
    for _, key, value, baseline, ratio, _, _ in ISSUE_ROWS:
        scenario = results.get(key, {})
        values.append((scenario.get(value), scenario.get(baseline), scenario.get(ratio)))
    found = results.get("verdict", {})
    raw_rate = found.get("raw_requests_per_s")
    values.append((results.get("e2e", {}).get("deliveries_per_s"), raw_rate, found.get("ratio")))
    peer_rate = results.get("pgqueuer", {}).get("pgqueuer")
    values.append((peer_rate, raw_rate, found.get("peer_ratio")))
    p99 = found.get("p99_ms")
    values.append((p99, FLOOR_P99_MS, round(p99 / FLOOR_P99_MS, 3) if p99 is not None else None))
    return values


def print_issue_table(runs: list[dict[str, Any]]) -> None:
    """One line per row of the issue table: value and baseline (min–max over the runs), the
    ratio of every run, its spread, the target, and whether every run met it."""
    rows = [*ISSUE_ROWS]
    rows.append(("e2e vs raw aiohttp limit", "", "", "", "", FLOOR_RATIO, ">="))
    rows.append(("pgqueuer peer e2e vs raw (reference)", "", "", "", "", None, ">="))
    rows.append(("p99 ingest→arrival ms vs 25 ms", "", "", "", "", 1.0, "<="))
    per_run = [_issue_values(results) for results in runs]
    header = ("row", "value", "baseline", "ratio per run", "spread", "target", "")
    lines = [header]
    for index, (label, *_, target, comparison) in enumerate(rows):
        values = [run[index] for run in per_run]
        ratios = [ratio for _, _, ratio in values]
        if all(ratio is None for ratio in ratios):
            continue
        known = [r for r in ratios if r is not None]
        worst = (min(known) if comparison == ">=" else max(known)) if known else None
        holds = (
            target is not None
            and len(known) == len(ratios)
            and worst is not None
            and (worst >= target if comparison == ">=" else worst <= target)
        )
        lines.append(
            (
                label,
                _spread([v for v, _, _ in values]),
                _spread([b for _, b, _ in values]),
                " ".join(_fmt(r) if r is not None else "-" for r in ratios),
                f"{max(known) - min(known):.3f}" if known else "-",
                "-" if target is None else f"{comparison} {target:g}",
                "reference" if target is None else "ok" if holds else "MISSED",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print()
    print(f"issue table ({len(runs)} run{'s' if len(runs) > 1 else ''})")
    for number, line in enumerate(lines):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * width for width in widths))
