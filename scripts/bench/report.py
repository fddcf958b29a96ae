"""Renders the suite's results.json as Markdown and JSON (called by scripts/bench.sh).

Usage: report.py RESULTS_JSON PG_VERSION OUT_JSON OUT_MD
OUT_JSON gets the results as measured; in OUT_MD the section between the markers below is
replaced (the rest of the file, the analysis written by people, is kept).
"""
import datetime
import json
import os
import statistics
import sys

BEGIN = "<!-- scripts/bench.sh writes from here -->"
END = "<!-- scripts/bench.sh writes up to here -->"


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def rows_label(r):
    return f"{r['rows']['invoices']:,} × {r['rows']['payments']:,}"


def rss(r):
    return ", ".join(f"{k} {v}" for k, v in r["peak_rss_mib"].items())


def limit_bytes(text):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[:-len(unit)]) * factor
    return float(text)


def find(results, **want):
    return [r for r in results if all(r.get(k) == v for k, v in want.items())]


def render(doc, pg_version):
    res = doc["results"]
    m = doc["machine"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [BEGIN, "", f"## Suite results (`bash scripts/bench.sh`, {now})", "",
           f"Machine: {m['cores']} cores, {m['ram_gib']} GiB RAM; kallad, its executors, PostgreSQL "
           f"{pg_version or '(skipped)'} and DuckDB {doc['duckdb']} share it. Every count of every run "
           "equalled the generator's ground truth (else the suite stops). Seconds: from the POST to the "
           f"`complete` callback; median of {doc['runs']} runs where several are listed. Input rows/s: "
           "rows of both sources over the median. Peak RSS: VmHWM of each process (fresh per cell).", ""]

    goal = []
    for source in ("parquet", "postgres"):
        local = find(res, group="goal", source=source, mode="local")
        cluster = find(res, group="goal", source=source, mode="cluster")
        if not local:
            continue
        k = local[0]["median"]
        if source == "parquet":
            d = med(local[0].get("duckdb_seconds", []))
            goal.append(f"| 2M × 1.9M Parquet, local vs DuckDB | {fmt(k)} s | DuckDB {fmt(d)} s | "
                        f"{fmt(k / d if d else None)}x | ≤ 1.0x |")
        else:
            copy = med(local[0].get("raw_copy_seconds", []))
            d_rows = find(res, group="goal", source="parquet", mode="local")
            d = med(d_rows[0].get("duckdb_seconds", [])) if d_rows else None
            peer = copy + d if copy is not None and d is not None else None
            goal.append(f"| 2M × 1.9M Postgres, local vs raw COPY + DuckDB | {fmt(k)} s | COPY {fmt(copy)} s "
                        f"+ DuckDB {fmt(d)} s = {fmt(peer)} s | {fmt(k / peer if peer else None)}x | ≤ 1.2x |")
        if cluster:
            c = cluster[0]["median"]
            goal.append(f"| 2M × 1.9M {source}, cluster ({cluster[0]['executors']} executors) vs local | {fmt(c)} s | "
                        f"local {fmt(k)} s | {fmt(c / k)}x | ≤ 1.3x |")
    if goal:
        out += ["### Goals", "", "| scenario | kallad | peer | ratio | goal |", "|---|---|---|---|---|", *goal, ""]

    growth = []
    for source in ("parquet", "postgres"):
        rows = sorted(find(res, group="growth", source=source), key=lambda r: r["rows"]["invoices"])
        if not rows:
            continue
        t = {r["rows"]["invoices"]: r["median"] for r in rows}
        cells = " | ".join(f"{fmt(t.get(n))} s" for n in (1_000_000, 2_000_000, 5_000_000, 10_000_000))
        ratio = t[10_000_000] / t[1_000_000] if 10_000_000 in t and 1_000_000 in t else None
        growth.append(f"| {source} | {cells} | {fmt(ratio)} |")
    if growth:
        out += ["### Growth (1:1, N × N rows, local)", "",
                "| source | 1M | 2M | 5M | 10M | t(10M) / t(1M) (goal ≤ 11) |", "|---|---|---|---|---|---|",
                *growth, ""]

    for r in find(res, group="memory"):
        out += [f"### Memory bound ({rows_label(r)}, `--memory-limit {r['memory_limit']}`, {r['source']}, {r['mode']})",
                "", f"Outcome: **{r['outcome']}**"
                + (f" in {fmt(r['median'])} s" if r["median"] else "")
                + (f", error `{r['error']['code']}`: {r['error']['message']}" if r.get("error") else "")
                + f"; the daemon {'stayed up' if r['daemon_alive'] else 'DIED'}; peak RSS {rss(r)} MiB.", ""]

    fit = find(res, group="memory fit") + find(res, group="memory")
    if fit:
        out += ["### What fits in how much memory (one-to-one, Parquet, local, `--memory-limit`)", "",
                "| rows (invoices × payments) | limit | outcome | seconds | peak RSS (MiB) |", "|---|---|---|---|---|"]
        for r in sorted(fit, key=lambda r: (r["rows"]["invoices"], limit_bytes(r["memory_limit"]))):
            what = r["outcome"] + (f" (`{r['error']['code']}`)" if r.get("error") else "")
            out.append(f"| {rows_label(r)} | {r['memory_limit']} | {what} | {fmt(r['median'])} | {rss(r)} |")
        out.append("")

    out += ["### Every cell", "",
            "| group | shape | rows (invoices × payments) | source | mode | seconds (runs) | median | input rows/s "
            "| peak RSS (MiB) | peer, median (s) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res:
        runs = ", ".join(fmt(s) for s in r["seconds"]) or r["outcome"]
        rate = f"{r['rows_per_second']:,}" if r["rows_per_second"] else "–"
        peer = (f"DuckDB {fmt(med(r['duckdb_seconds']))}" if r.get("duckdb_seconds")
                else f"raw COPY {fmt(med(r['raw_copy_seconds']))}" if r.get("raw_copy_seconds") else "–")
        out.append(f"| {r['group']} | {r['shape']} | {rows_label(r)} | {r['source']} | {r['mode']} | {runs} | "
                   f"{fmt(r['median'])} | {rate} | {rss(r)} | {peer} |")
    out += ["", "Peers: " + "; ".join(
        f"{r['shape']} {rows_label(r)} {r['source']}: "
        + (f"DuckDB {', '.join(fmt(s) for s in r['duckdb_seconds'])} s" if "duckdb_seconds" in r else "")
        + (f"raw COPY {', '.join(fmt(s) for s in r['raw_copy_seconds'])} s" if "raw_copy_seconds" in r else "")
        for r in res if "duckdb_seconds" in r or "raw_copy_seconds" in r) + ".", "", END]
    return "\n".join(out) + "\n"


def main():
    results, pg_version, out_json, out_md = sys.argv[1:5]
    with open(results) as f:
        doc = json.load(f)
    with open(out_json, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    section = render(doc, pg_version)
    text = open(out_md).read() if os.path.exists(out_md) else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(out_md, "w") as f:
        f.write(text)
    print(section)


if __name__ == "__main__":
    main()
