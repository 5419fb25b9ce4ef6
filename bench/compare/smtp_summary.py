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

    def ratio(c, server, client):
        a, b = median(rate(c, server, client)), median(rate(c, "postfix", client))
        return "%.2f" % (a / b) if a is not None and b else "-"

    def latency(c, server):
        rs = [r for r in c.get((server, "ringmail-bench"), []) if r["result"] == "ok"]
        p50, p99 = median([fnum(r["p50_us"]) for r in rs]), median([fnum(r["p99_us"]) for r in rs])
        return "%.0f / %.0f" % (p50, p99) if p50 is not None else "-"

    variants = [v for v in servers if v != "postfix"] or ["ringmail"]
    print("Messages per second accepted (answered 250 after the data), median [min..max] over the runs;")
    print("ratio = ringmaild median / Postfix median.  Latency: ringmail-bench's end of data -> 250,")
    print("median of the runs' p50 and p99, in microseconds.  ringmail: queues and delivers to the")
    print("sink meanwhile, as Postfix does; ringmail-queue: queues only (delivery off).")
    for v in variants:
        print()
        print("#### %s against Postfix" % v)
        print()
        print("| sessions | size | msgs | smtp-source: Postfix | smtp-source: %s | ratio "
              "| ringmail-bench: Postfix | ringmail-bench: %s | ratio | p50 / p99 us Postfix "
              "| p50 / p99 us %s |" % (v, v, v))
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for (sess, size) in sorted(cells):
            c = cells[(sess, size)]
            msgs = sorted({r["msgs"] for vv in c.values() for r in vv})
            print("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                sess, size, "/".join(msgs),
                span(rate(c, "postfix", "smtp-source")), span(rate(c, v, "smtp-source")),
                ratio(c, v, "smtp-source"),
                span(rate(c, "postfix", "ringmail-bench")), span(rate(c, v, "ringmail-bench")),
                ratio(c, v, "ringmail-bench"), latency(c, "postfix"), latency(c, v)))
    e2e = sorted({r["client"] for r in rows if r["client"].startswith("e2e:")})
    if e2e:
        print()
        print("End to end (accepted, spooled, delivered to the sink: from the client's start until the queue")
        print("is empty again), messages/s, median [min..max]; ratio = ringmaild / Postfix:")
        print()
        print("| sessions | size | client | Postfix | ringmail | ratio |")
        print("|---|---|---|---|---|---|")
        for (sess, size) in sorted(cells):
            c = cells[(sess, size)]
            for client in e2e:
                if (("postfix", client) not in c) and (("ringmail", client) not in c):
                    continue
                print("| %d | %d | %s | %s | %s | %s |" % (sess, size, client[4:], span(rate(c, "postfix", client)),
                                                       span(rate(c, "ringmail", client)), ratio(c, "ringmail", client)))
    paced = sorted({r["client"] for r in rows if r["client"].startswith("ringmail-bench@")})
    if paced:
        print()
        print("ringmaild at a given load (ringmail-bench --rate: an open loop), median [min..max] over the runs:")
        print()
        print("| server | sessions | size | rate asked | msgs/s | p50 us | p99 us |")
        print("|---|---|---|---|---|---|---|")
        for v in variants:
          for (sess, size) in sorted(cells):
            for client in paced:
                rs = [r for r in cells[(sess, size)].get((v, client), []) if r["result"] == "ok"]
                if not rs:
                    continue
                print("| %s | %d | %d | %s | %s | %s | %s |" % (
                    v, sess, size, client.split("@", 1)[1], span([fnum(r["msgs_per_s"]) for r in rs]),
                    span([fnum(r["p50_us"]) for r in rs]), span([fnum(r["p99_us"]) for r in rs])))
    print()
    print("Servers measured: %s." % (", ".join(servers) if servers else "none"))
    if not [v for v in servers if v != "postfix"]:
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
