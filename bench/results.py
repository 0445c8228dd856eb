"""The rows the wrk-based bench scripts write, one wrk run a line: the
fields naming the cell (target, concurrency, ...), then requests/s, p50
and p99 as wrk prints them, then CPU figures in hundredths of a
microsecond per request."""

import statistics


def ms(value):
    """A wrk duration (`812.00us`, `1.25ms`, `2.10s`) in milliseconds."""
    if value.endswith("us"):
        return float(value[:-2]) / 1000
    if value.endswith("ms"):
        return float(value[:-2])
    return float(value[:-1]) * 1000


def load(path, key_fields):
    """{cell: [(rps, p50 ms, p99 ms, cpu us...), one per round]}; numeric
    key fields (the concurrency) are ints."""
    rows = {}
    for line in open(path):
        fields = line.split()
        key = tuple(int(f) if f.isdigit() else f for f in fields[:key_fields])
        rps, p50, p99, *cpu = fields[key_fields:]
        rows.setdefault(key, []).append(
            (float(rps), ms(p50), ms(p99), *(int(c) / 100 for c in cpu)))
    return rows


def median(rows, key, i):
    """The median over rounds of figure `i` of one cell."""
    return statistics.median(r[i] for r in rows[key])
