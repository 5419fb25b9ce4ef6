#!/usr/bin/env python3
"""tls_summary.py RESULTS_DIR - markdown tables from a bench/compare/tls-handshake.sh run.

Reads handshake.tsv, memory.tsv, speed.tsv and negotiated.tsv (whichever the
run produced) and prints: handshakes/s (wall) and handshakes per server
CPU-second per cell and server, median [min..max] over the rounds, with the
ratio of each ringmaild to nginx; memory per idle TLS connection; primitive
speeds of OpenSSL and wolfSSL side by side; and the goal (handshakes/s at
least nginx's, idle memory at most half of nginx's) per ringmaild.
Standard library only.
"""
import csv
import os
import statistics
import sys


MODES = {"new": "full (s_time -new)", "reuse": "resumed (s_time -reuse)", "resume": "resumed (tls_resume.py)"}


def read(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt(xs):
    if not xs:
        return "-"
    return "%s [%s..%s]" % (f"{med(xs):,.0f}", f"{min(xs):,.0f}", f"{max(xs):,.0f}")


def main():
    d = sys.argv[1]
    hs = read(os.path.join(d, "handshake.tsv"))
    mem = read(os.path.join(d, "memory.tsv"))
    speed = read(os.path.join(d, "speed.tsv"))
    verdict = {}

    if os.path.exists(os.path.join(d, "machine.txt")):
        print("```")
        print(open(os.path.join(d, "machine.txt")).read().rstrip())
        print("```\n")

    negp = os.path.join(d, "negotiated.tsv")
    if os.path.exists(negp):
        print("Negotiated (`openssl s_client -brief`, default client offer):\n")
        print("| server | cert | TLS | protocol, cipher, key exchange |")
        print("|---|---|---|---|")
        for line in open(negp):
            f = line.rstrip("\n").split("\t")
            if len(f) >= 4:
                print("| %s | %s | %s | %s |" % tuple(f[:4]))
        print()

    if hs:
        servers = list(dict.fromkeys(r["server"] for r in hs))
        cells = list(dict.fromkeys((r["cert"], r["tls"], r["mode"]) for r in hs))
        val = {}
        for r in hs:
            k = (r["server"], r["cert"], r["tls"], r["mode"])
            v = val.setdefault(k, {"wall": [], "cpu": [], "n": [], "res": []})
            v["wall"].append(float(r["hs_per_s"]))
            v["cpu"].append(float(r["hs_per_cpu_s"]))
            v["n"].append(int(r["conns"]))
            v["res"].append(int(r["resumed"]))
        rms = [s for s in servers if s != "nginx"]
        for metric, title in (("cpu", "handshakes per server CPU-second"), ("wall", "handshakes/s, wall")):
            print("%s, median [min..max] over %d rounds:\n" % (title.capitalize(),
                                                              max(len(v["wall"]) for v in val.values())))
            head = "| cert | TLS | handshake | " + " | ".join(servers) + " | " + \
                " | ".join("%s / nginx" % s for s in rms) + " |"
            print(head)
            print("|" + "---|" * (3 + len(servers) + len(rms)))
            for c in cells:
                row = ["ECDSA P-256" if c[0] == "ecdsa" else "RSA-2048", c[1], MODES.get(c[2], c[2])]
                for s in servers:
                    row.append(fmt(val.get((s,) + c, {}).get(metric, [])))
                base = med(val.get(("nginx",) + c, {}).get(metric, []))
                for s in rms:
                    m = med(val.get((s,) + c, {}).get(metric, []))
                    ratio = m / base if base and base == base else float("nan")
                    verdict.setdefault((s, metric), []).append((ratio, c))
                    row.append("%.2f" % ratio)
                print("| " + " | ".join(row) + " |")
            print()
        print("Resumed connections in the resumption cells, all rounds:\n")
        print("| server | cert | TLS | resumed / connections |")
        print("|---|---|---|---|")
        for s in servers:
            for c in cells:
                if c[2] == "new":
                    continue
                v = val.get((s,) + c)
                if v:
                    print("| %s | %s | %s %s | %d / %d |" % (s, c[0], c[1], MODES[c[2]], sum(v["res"]), sum(v["n"])))
        print()

    if mem:
        print("Memory per idle TLS connection (ECDSA P-256 certificate, full handshake, greeting read, "
              "then idle; server process: nginx's worker, ringmaild's process):\n")
        print("| server | TLS | connections (alive) | RSS before -> after | RSS per connection | "
              "PSS per connection | / nginx (PSS) |")
        print("|---|---|---|---|---|---|---|")
        base = {r["tls"]: float(r["pss_per_conn_b"]) for r in mem if r["server"] == "nginx"}
        for r in mem:
            ratio = float(r["pss_per_conn_b"]) / base[r["tls"]] if base.get(r["tls"]) else float("nan")
            if r["server"] != "nginx":
                verdict.setdefault((r["server"], "mem"), []).append((ratio, r["tls"]))
            print("| %s | %s | %s (%s) | %s -> %s kB | %s B | %s B | %s |" % (
                r["server"], r["tls"], r["conns"], r["alive"], f"{int(r['rss0_kb']):,}", f"{int(r['rss1_kb']):,}",
                f"{float(r['rss_per_conn_b']):,.0f}", f"{float(r['pss_per_conn_b']):,.0f}",
                "%.2f" % ratio if r["server"] != "nginx" else "1"))
        print()

    if speed:
        libs = list(dict.fromkeys(r["lib"] for r in speed))
        prims = list(dict.fromkeys(r["primitive"] for r in speed))
        v, unit = {}, {}
        for r in speed:
            v.setdefault((r["lib"], r["primitive"]), []).append(float(r["value"]))
            unit[r["primitive"]] = r["unit"]
        rounds = max(len(x) for x in v.values())
        print("Primitives on one core (taskset -c 0), median [min..max] of %d rounds:\n" % rounds)
        others = [l for l in libs if l != "openssl"]
        print("| primitive | unit | " + " | ".join(libs) + " | " + " | ".join("%s / openssl" % l for l in others) + " |")
        print("|" + "---|" * (2 + len(libs) + len(others)))
        for p in prims:
            row = [p, unit[p]]
            for l in libs:
                row.append(fmt(v.get((l, p), [])))
            for l in others:
                if (l, p) in v and ("openssl", p) in v and med(v[("openssl", p)]):
                    row.append("%.2f" % (med(v[(l, p)]) / med(v[("openssl", p)])))
                else:
                    row.append("-")
            print("| " + " | ".join(row) + " |")
        print()

    if verdict:
        print("Goal: handshakes/s at least nginx's (ratio >= 1 in every cell), memory per idle TLS "
              "connection at most half of nginx's (ratio <= 0.5):\n")
        print("| server | handshakes per CPU-s / nginx (lowest cell) | handshakes/s wall / nginx (lowest cell) | "
              "idle PSS / nginx (highest) | goal |")
        print("|---|---|---|---|---|")
        for s in dict.fromkeys(k[0] for k in verdict):
            cpu = min(verdict.get((s, "cpu"), [(float("nan"), None)]), key=lambda x: x[0])
            wall = min(verdict.get((s, "wall"), [(float("nan"), None)]), key=lambda x: x[0])
            memv = max(verdict.get((s, "mem"), [(float("nan"), None)]), key=lambda x: x[0])
            ok = cpu[0] >= 1 and wall[0] >= 1 and memv[0] <= 0.5
            desc = lambda x: ("%.2f (%s)" % (x[0], "/".join(x[1]) if isinstance(x[1], tuple) else "TLS %s" % x[1])
                              if x[1] is not None else "-")
            print("| %s | %s | %s | %s | %s |" % (s, desc(cpu), desc(wall), desc(memv), "met" if ok else "**not met**"))
        print()


if __name__ == "__main__":
    main()
