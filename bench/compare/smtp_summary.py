#!/usr/bin/env python3
"""Markdown summary of bench/compare/smtp-accept.sh's TSV: one row per cell
(sessions x size), median [min..max] over the runs for each server and client,
and the ratio ringmail / Postfix of the medians.  Standard library only.

usage: smtp_summary.py RESULTS.tsv
"""

import csv
import statistics
import sys


def fnum(v):
    try:
        return float(v)
    except ValueError:
        return None


def span(values, fmt="%.0f"):
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return "-"
    return (fmt + " [" + fmt + ".." + fmt + "] n=%d") % (statistics.median(vals), vals[0], vals[-1], len(vals))


def median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def main(path):
    rows = list(csv.DictReader(open(path, newline=""), delimiter="\t"))
    cells = {}
    for r in rows:
        key = (int(r["sessions"]), int(r["size"]))
        cells.setdefault(key, {}).setdefault((r["server"], r["client"]), []).append(r)
    servers = sorted({r["server"] for r in rows})
    fails = [r for r in rows if r["result"] != "ok"]

    def rate(c, server, client):
        return [fnum(r["msgs_per_s"]) for r in c.get((server, client), []) if r["result"] == "ok"]

    def ratio(c, client):
        a, b = median(rate(c, "ringmail", client)), median(rate(c, "postfix", client))
        return "%.2f" % (a / b) if a is not None and b else "-"

    print("Messages per second accepted (answered 250 after the data), median [min..max] over the runs;")
    print("ratio = ringmail median / Postfix median.  Latency: ringmail-bench's end of data -> 250,")
    print("median of the runs' p50 and p99, in microseconds.")
    print()
    print("| sessions | size | msgs | smtp-source: Postfix | smtp-source: ringmail | ratio "
          "| ringmail-bench: Postfix | ringmail-bench: ringmail | ratio | p50 / p99 us Postfix "
          "| p50 / p99 us ringmail |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (sess, size) in sorted(cells):
        c = cells[(sess, size)]
        msgs = sorted({r["msgs"] for v in c.values() for r in v})
        lat = {}
        for server in ("postfix", "ringmail"):
            rs = [r for r in c.get((server, "ringmail-bench"), []) if r["result"] == "ok"]
            p50, p99 = median([fnum(r["p50_us"]) for r in rs]), median([fnum(r["p99_us"]) for r in rs])
            lat[server] = "%.0f / %.0f" % (p50, p99) if p50 is not None else "-"
        print("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            sess, size, "/".join(msgs),
            span(rate(c, "postfix", "smtp-source")), span(rate(c, "ringmail", "smtp-source")),
            ratio(c, "smtp-source"),
            span(rate(c, "postfix", "ringmail-bench")), span(rate(c, "ringmail", "ringmail-bench")),
            ratio(c, "ringmail-bench"), lat["postfix"], lat["ringmail"]))
    print()
    print("Servers measured: %s." % (", ".join(servers) if servers else "none"))
    if "ringmail" not in servers:
        print("ringmaild was not measured in this run (not in SERVERS, or it did not start).")
    if fails:
        print()
        print("FAILED measurements (not in the figures above):")
        for r in fails:
            print("- %s %s %s sessions x %s bytes, run %s" % (r["server"], r["client"], r["sessions"],
                                                             r["size"], r["run"]))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
