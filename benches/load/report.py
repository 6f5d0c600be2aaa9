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
    by = {(r["scenario"], r["system"]): r for r in rows if r["status"] == "ok"}
    out = []

    def check(name, ok, detail):
        out.append({"target": name, "met": ok, "detail": detail})

    sc, ng = by.get(("1-hot-hit", "sidecache")), by.get(("1-hot-hit", "nginx"))
    if sc and ng:
        check("L1 hit: CPU/req <= 0.8x nginx", sc["cpu_x_nginx"] <= 0.8, f"{sc['cpu_x_nginx']:.2f}x")
        check("L1 hit: req/s >= 1.2x nginx", sc["rps_x_nginx"] >= 1.2, f"{sc['rps_x_nginx']:.2f}x")
        check("L1 hit: p99 <= nginx", sc["p99_x_nginx"] <= 1.0, f"{sc['p99_x_nginx']:.2f}x")
    sc, ng = by.get(("2-mixed-zipf", "sidecache")), by.get(("2-mixed-zipf", "nginx"))
    if sc and ng:
        check("Mixed: req/s >= 1.2x nginx at >= hit ratio",
              sc["rps_x_nginx"] >= 1.2 and sc["hit_ratio"] >= ng["hit_ratio"],
              f"{sc['rps_x_nginx']:.2f}x, hit ratio {sc['hit_ratio']:.4f} vs {ng['hit_ratio']:.4f}")
    for c in (64, 4):
        sc, ng = by.get((f"3-l2-hit-c{c}", "sidecache-l2")), by.get((f"3-l2-hit-c{c}", "nginx"))
        if sc:
            peer = f" (nginx hot hit {ng['p99_ms']:.2f} ms)" if ng else ""
            check(f"L2 hit, {c} connections: p99 <= 2 ms", sc["p99_ms"] <= 2.0,
                  f"{sc['p99_ms']:.2f} ms{peer}")
    sc, ng = by.get(("4-pass-through", "sidecache")), by.get(("4-pass-through", "nginx"))
    if sc and ng:
        check("Pass-through: CPU/req <= nginx", sc["cpu_x_nginx"] <= 1.0, f"{sc['cpu_x_nginx']:.2f}x")
    sc = by.get(("6-stampede", "sidecache"))
    if sc:
        per = sc.get("origin_requests_per_round", [sc["origin_requests"]])
        check("Stampede: exactly 1 origin request", all(n == 1 for n in per), f"per round {per}")
        ratio = sc["p50_ms"] / sc["origin_delay_ms"]
        check("Stampede: p50 <= 1.3x origin delay", ratio <= 1.3, f"p50 {sc['p50_ms']:.1f} ms = {ratio:.2f}x")
    sc = by.get(("5-conns-10000", "sidecache"))
    if sc:
        check("10,000 connections: 0 errors", sc["errors"] == 0, f"{sc['errors']} errors")
        check("10,000 connections: RSS <= 256 MB", sc["rss_mb"] <= 256, f"{sc['rss_mb']:.0f} MB")
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
    rows = with_ratios(aggregate(per_run))
    tg = targets(rows)
    print(table(rows))
    print()
    for t in tg:
        print(f"- {'MET   ' if t['met'] else 'MISSED'} {t['target']}: {t['detail']}")
    for r in rows:
        if r.get("cpu_us_per_req_x_base") is not None:
            print(f"- sidecache vs baseline, {r['scenario']}: CPU/req {r['cpu_us_per_req_x_base']:.3f}x, "
                  f"req/s {r['rps_x_base']:.3f}x, p99 {r['p99_ms_x_base']:.3f}x")
    for r in rows:
        if "sidecache_outcomes" in r:
            print(f"- sidecache outcomes, {r['scenario']}/{r['system']}: {r['sidecache_outcomes']}")
    with open(out_path, "w") as f:
        json.dump({"meta": meta, "rows": rows, "targets": tg, "per_run": per_run, "raw": runs},
                  f, indent=1)


if __name__ == "__main__":
    main()
