#!/usr/bin/env python3
"""Turns the runs of benches/load/run.sh (one JSON object per line) into a Markdown table on
stdout and a JSON file: per system and scenario (median over the rounds) requests/s, latency percentiles, errors, CPU
time per request, peak RSS, hit ratio and ratios against nginx in the same scenario; then the
issue's targets, met or missed. Python 3 stdlib only.

usage: report.py RUNS.jsonl OUT.json [--meta key=value ...]
"""
import json
import statistics
import sys

MEDIAN = ("rps", "p50_ms", "p99_ms", "p999_ms", "cpu_us_per_req", "rss_mb", "hit_ratio", "cpu_s")
SUM = ("requests", "errors", "origin_requests")


def aggregate(rows):
    """One row per (scenario, system): the median of each figure over the rounds, errors,
    requests and origin requests summed."""
    groups = {}
    for r in rows:
        groups.setdefault((r["scenario"], r["system"]), []).append(r)
    out = []
    for (scenario, system), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        if not ok:
            out.append(rs[0])
            continue
        row = {"scenario": scenario, "system": system, "status": "ok", "rounds": len(ok),
               "conns": ok[0]["conns"]}
        for k in MEDIAN:
            vals = [r[k] for r in ok if r.get(k) is not None]
            row[k] = statistics.median(vals) if vals else None
            if len(vals) > 1 and k in ("rps", "cpu_us_per_req", "p99_ms"):
                row[k + "_range"] = [min(vals), max(vals)]
        for k in SUM:
            row[k] = sum(r.get(k) or 0 for r in ok)
        if "origin_delay_ms" in ok[0]:
            row["origin_delay_ms"] = ok[0]["origin_delay_ms"]
            row["origin_requests_per_round"] = [r["origin_requests"] for r in ok]
        outcomes = {}
        for r in ok:
            for k, v in (r.get("sidecache_outcomes") or {}).items():
                outcomes[k] = outcomes.get(k, 0) + v
        if outcomes:
            row["sidecache_outcomes"] = outcomes
        out.append(row)
    return out


def rows_of(runs):
    """One row per run."""
    rows = []
    for r in runs:
        row = {"scenario": r["scenario"], "system": r["system"], "status": r["status"]}
        if r["status"] != "ok":
            rows.append(row)
            continue
        if "wrk" in r:
            w = r["wrk"]
            reqs = w.get("requests", 0)
            secs = w.get("duration_us", 0) / 1e6
            row.update(
                requests=reqs,
                rps=reqs / secs if secs else 0.0,
                p50_ms=w.get("p50_us", 0) / 1000,
                p99_ms=w.get("p99_us", 0) / 1000,
                p999_ms=w.get("p999_us", 0) / 1000,
                errors=w.get("errors", 0),
                error_detail={k: w[k] for k in w if k.startswith("err_")},
            )
        else:  # stampede
            s = r["stampede"]
            reqs = s["requests"]
            row.update(
                requests=reqs,
                rps=None,
                p50_ms=s["p50_ms"],
                p99_ms=s["p99_ms"],
                p999_ms=s["p999_ms"],
                errors=s["errors"],
                origin_delay_ms=r["origin_delay_ms"],
            )
        row["conns"] = r["conns"]
        row["cpu_s"] = r["cpu_s"]
        row["cpu_us_per_req"] = r["cpu_s"] * 1e6 / reqs if reqs else None
        row["rss_mb"] = r["rss_kb"] / 1024
        row["origin_requests"] = r["origin_requests"]
        row["hit_ratio"] = 1 - r["origin_requests"] / reqs if reqs else None
        before, after = r.get("outcomes_before") or {}, r.get("outcomes_after") or {}
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        if any(delta.values()):
            row["sidecache_outcomes"] = {k: v for k, v in delta.items() if v}
        rows.append(row)
    return rows


def with_ratios(rows):
    """Ratios against nginx in the same scenario, and of sidecache against its baseline build
    (run.sh --baseline) when one ran."""
    base = {r["scenario"]: r for r in rows if r["system"] == "sidecache-base" and r["status"] == "ok"}
    for r in rows:
        peer = base.get(r["scenario"])
        if r["system"] == "sidecache" and r["status"] == "ok" and peer:
            for key in ("rps", "cpu_us_per_req", "p99_ms"):
                a, b = r.get(key), peer.get(key)
                r[key + "_x_base"] = a / b if a is not None and b else None
    nginx = {r["scenario"]: r for r in rows if r["system"] == "nginx" and r["status"] == "ok"}
    for r in rows:
        peer = nginx.get(r["scenario"])
        if r["status"] != "ok" or not peer or r is peer:
            continue
        for key, name in (("rps", "rps_x_nginx"), ("cpu_us_per_req", "cpu_x_nginx"), ("p99_ms", "p99_x_nginx")):
            a, b = r.get(key), peer.get(key)
            r[name] = a / b if a is not None and b else None
    return rows


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def table(rows):
    head = ("| scenario | system | req/s | p50 ms | p99 ms | p99.9 ms | errors | CPU µs/req | "
            "peak RSS MB | hit ratio | req/s ×nginx | CPU ×nginx | p99 ×nginx |")
    out = [head, "|" + "---|" * 13]
    for r in rows:
        if r["status"] != "ok":
            out.append(f"| {r['scenario']} | {r['system']} | {r['status']} |" + " |" * 10)
            continue
        extra = ""
        if "origin_delay_ms" in r:
            per = r.get("origin_requests_per_round", [r["origin_requests"]])
            extra = f" (origin requests per round {per})"
        out.append(
            f"| {r['scenario']} | {r['system']}{extra} | {fmt(r['rps'], ',.0f')} | {fmt(r['p50_ms'], '.2f')} | "
            f"{fmt(r['p99_ms'], '.2f')} | {fmt(r['p999_ms'], '.2f')} | {r['errors']} | "
            f"{fmt(r['cpu_us_per_req'], '.1f')} | {fmt(r['rss_mb'], '.0f')} | "
            f"{fmt(r['hit_ratio'], '.4f') if r['scenario'][0] != '4' else '–'} | "
            f"{fmt(r.get('rps_x_nginx'), '.2f')} | {fmt(r.get('cpu_x_nginx'), '.2f')} | {fmt(r.get('p99_x_nginx'), '.2f')} |"
        )
    return "\n".join(out)


def targets(rows):
    """Issue 12's targets, each as met or missed with the measured figure."""
    by = {(r["scenario"], r["system"]): r for r in rows if r["status"] == "ok"}
    out = []

    def check(name, ok, detail):
        out.append({"target": name, "met": ok, "detail": detail})

    def vs_nginx(scenario, system, key, limit, name):
        sc = by.get((scenario, system))
        if sc and sc.get(key) is not None:
            check(name, sc[key] <= limit, f"{sc[key]:.2f}x")

    vs_nginx("1-hot-hit", "sidecache", "cpu_x_nginx", 1.0, "L1 hit: CPU/req <= 1.0x nginx (goal 0.8x)")
    vs_nginx("2-mixed-zipf", "sidecache", "cpu_x_nginx", 1.2, "Zipf, cold start: CPU/req <= 1.2x nginx")
    vs_nginx("4-pass-origin-mode", "sidecache", "cpu_x_nginx", 1.5,
             "Pass-through (unmatched path, origin mode): CPU/req <= 1.5x nginx")
    vs_nginx("4-pass-through", "sidecache", "cpu_x_nginx", 1.5,
             "Pass-through (cache = false route): CPU/req <= 1.5x nginx")
    for c in (1000, 10000):
        sc = by.get((f"5-conns-{c}", "sidecache"))
        if sc and sc.get("p99_x_nginx") is not None:
            check(f"{c:,} connections: p99 <= 1.0x nginx, 0 errors",
                  sc["p99_x_nginx"] <= 1.0 and sc["errors"] == 0,
                  f"{sc['p99_x_nginx']:.2f}x ({sc['p99_ms']:.1f} ms), {sc['errors']} errors")
    sc, ng = by.get(("7-flood", "sidecache-flood")), by.get(("7-flood", "nginx"))
    if sc:
        check("Flood of distinct keys: RSS <= L1 budget (64 MiB) + 64 MB", sc["rss_mb"] <= 128,
              f"{sc['rss_mb']:.0f} MB")
        if ng:
            check("Flood of distinct keys: keys/s >= 1.0x nginx", sc["rps_x_nginx"] >= 1.0,
                  f"{sc['rps']:,.0f}/s vs {ng['rps']:,.0f}/s = {sc['rps_x_nginx']:.2f}x")
            # One stored miss: the flood is all stored misses.
            check("One stored miss: CPU <= nginx's", sc["cpu_x_nginx"] <= 1.0,
                  f"{sc['cpu_us_per_req']:.0f} µs vs {ng['cpu_us_per_req']:.0f} µs = {sc['cpu_x_nginx']:.2f}x")
        l2 = by.get(("7-flood", "sidecache-flood-l2"))
        if l2 and ng:
            check("Flood of distinct keys with Redis L2 (proxy, origin and Redis on one core): "
                  "keys/s >= 0.7x nginx", l2["rps_x_nginx"] >= 0.7,
                  f"{l2['rps']:,.0f}/s vs {ng['rps']:,.0f}/s = {l2['rps_x_nginx']:.2f}x")
        base = by.get(("7-flood", "sidecache-base-flood"))
        if base:
            out.append({"target": "(baseline build) flood: RSS, keys/s",
                        "met": None,
                        "detail": f"{base['rss_mb']:.0f} MB vs {sc['rss_mb']:.0f} MB now; "
                                  f"{base['rps']:,.0f}/s vs {sc['rps']:,.0f}/s now"})
    for system in ("sidecache", "nginx"):
        before, during = by.get(("8-stall-before", system)), by.get(("8-stall-during", system))
        if before and during and before["p99_ms"]:
            ratio = during["p99_ms"] / before["p99_ms"]
            if system == "sidecache":
                check("A stalled route: p99 of other hits within 1.2x of before", ratio <= 1.2,
                      f"{during['p99_ms']:.2f} ms vs {before['p99_ms']:.2f} ms = {ratio:.2f}x")
            else:
                out.append({"target": "(peer) nginx, stalled route: p99 during / before",
                            "met": None, "detail": f"{ratio:.2f}x"})
    sc = by.get(("9-rss-10000", "sidecache-fresh"))
    if sc:
        check("10,000 connections, fresh process, 64 MiB L1: peak RSS <= 128 MB",
              sc["rss_mb"] <= 128 and sc["errors"] == 0, f"{sc['rss_mb']:.0f} MB, {sc['errors']} errors")
    sc = by.get(("6-stampede", "sidecache"))
    if sc:
        per = sc.get("origin_requests_per_round", [sc["origin_requests"]])
        check("Stampede: 1 origin request for 500 misses", all(n == 1 for n in per), f"per round {per}")
        ratio = sc["p50_ms"] / sc["origin_delay_ms"]
        check("Stampede: p50 <= 1.1x origin delay", ratio <= 1.1, f"p50 {sc['p50_ms']:.1f} ms = {ratio:.2f}x")
    return out


def main():
    runs_path, out_path = sys.argv[1], sys.argv[2]
    meta = {}
    if "--meta" in sys.argv:
        for kv in sys.argv[sys.argv.index("--meta") + 1:]:
            k, _, v = kv.partition("=")
            meta[k] = v
    with open(runs_path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    per_run = rows_of(runs)
    for r in per_run:
        # wrk reports the flood's rate over its whole -d, not until the threads stopped at
        # UNIQUE_LIMIT; on one pinned, saturated server core the rate is 1 / CPU per key.
        if r["scenario"] == "7-flood" and r.get("cpu_us_per_req"):
            r["rps"] = 1e6 / r["cpu_us_per_req"]
    rows = with_ratios(aggregate(per_run))
    tg = targets(rows)
    print(table(rows))
    print()
    for t in tg:
        mark = "      " if t["met"] is None else ("MET   " if t["met"] else "MISSED")
        print(f"- {mark} {t['target']}: {t['detail']}")
    for r in rows:
        if r.get("cpu_us_per_req_x_base") is not None:
            # the stampede has no request rate: its ratios may be missing
            print(f"- sidecache vs baseline, {r['scenario']}: CPU/req {fmt(r.get('cpu_us_per_req_x_base'), '.3f')}x, "
                  f"req/s {fmt(r.get('rps_x_base'), '.3f')}x, p99 {fmt(r.get('p99_ms_x_base'), '.3f')}x")
    for r in rows:
        if "sidecache_outcomes" in r:
            print(f"- sidecache outcomes, {r['scenario']}/{r['system']}: {r['sidecache_outcomes']}")
    with open(out_path, "w") as f:
        json.dump({"meta": meta, "rows": rows, "targets": tg, "per_run": per_run, "raw": runs},
                  f, indent=1)


if __name__ == "__main__":
    main()
