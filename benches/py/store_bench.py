#!/usr/bin/env python3
"""Flash wear of the result store, sled (Spotter's real store) beside SQLite in WAL mode, in one run.

1. `spotter bench-store` writes N typical results through the real store (sled), measuring
   results/s, /proc/self/io write_bytes per result and the database's bytes after closing, then
   exports the same records as NDJSON.
2. This script stores exactly those records in SQLite (Python's sqlite3, journal_mode=WAL,
   synchronous=NORMAL, one transaction per result as the daemon does), with the same layout: the
   record JSON under its 16-byte key, plus label and model index tables, and measures the same
   figures from its own /proc/self/io.

The baseline is Python's sqlite3 rather than rusqlite so CI does not compile SQLite's C source into
every test build; the per-insert interpreter overhead makes the SQLite results/s a lower bound (the
bytes written and stored, the point of the comparison, do not depend on it).

Prints one JSON object: {"sled": {...}, "sqlite": {...}, "ratio_sled_over_sqlite": {...}}.
Run on a real filesystem: on tmpfs write_bytes stays 0.
"""
import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time

FIGURES = ("results_per_s", "write_bytes_per_result", "db_bytes_per_million")


def write_bytes():
    with open("/proc/self/io", encoding="ascii") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no write_bytes (no task I/O accounting)")


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def load_records(ndjson):
    """(key, json text, model, [(label, best score)]) per record, as sled's indexes see them."""
    out = []
    with open(ndjson, encoding="utf-8") as f:
        header = json.loads(f.readline())
        assert "spotter_export" in header, header
        for line in f:
            line = line.rstrip("\n")
            rec = json.loads(line)
            best = {}
            for c in rec.get("classes", []) + rec.get("detections", []):
                best[c["label"]] = max(best.get(c["label"], float("-inf")), c["score"])
            out.append((bytes.fromhex(rec["id"]), line, rec["model_sha256"], sorted(best.items())))
    return out


def sqlite_run(records, directory, rate):
    os.makedirs(directory)
    path = os.path.join(directory, "results.db")
    before = write_bytes()
    started = time.monotonic()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE results (key BLOB PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID")
    con.execute("CREATE TABLE by_label (label TEXT, key BLOB, score REAL, PRIMARY KEY (label, key)) WITHOUT ROWID")
    con.execute("CREATE TABLE by_model (model TEXT, key BLOB, PRIMARY KEY (model, key)) WITHOUT ROWID")
    for i, (key, text, model, labels) in enumerate(records):
        con.execute("BEGIN")
        con.execute("INSERT INTO results VALUES (?, ?)", (key, text))
        con.executemany("INSERT INTO by_label VALUES (?, ?, ?)", [(l, key, s) for l, s in labels])
        con.execute("INSERT INTO by_model VALUES (?, ?)", (model, key))
        con.execute("COMMIT")
        if rate:
            wait = started + (i + 1) / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
    con.close()  # checkpoints the WAL into the database
    seconds = time.monotonic() - started
    written = write_bytes() - before
    n = max(len(records), 1)
    size = dir_bytes(directory)
    return {"results": len(records), "seconds": seconds, "results_per_s": len(records) / seconds,
            "write_bytes": written, "write_bytes_per_result": written / n,
            "dir_bytes": size, "db_bytes_per_million": size * 1_000_000 // n}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spotter", required=True, help="the spotter binary")
    ap.add_argument("--work", required=True, help="an empty directory on the filesystem to measure")
    ap.add_argument("--results", type=int, default=100_000)
    ap.add_argument("--rate", type=float, help="pace both at this many results per second")
    ap.add_argument("--cache-bytes", type=int, help="sled page cache (default: the daemon's)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    ndjson = os.path.join(a.work, "records.ndjson")
    argv = [a.spotter, "bench-store", "--dir", os.path.join(a.work, "sled"), "--results", str(a.results),
            "--ndjson", ndjson]
    if a.rate:
        argv += ["--rate", str(a.rate)]
    if a.cache_bytes:
        argv += ["--cache-bytes", str(a.cache_bytes)]
    sled = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
    records = load_records(ndjson)
    assert len(records) == a.results, f"{len(records)} records exported, {a.results} written"
    sqlite = sqlite_run(records, os.path.join(a.work, "sqlite"), a.rate)
    sqlite["sqlite_version"] = sqlite3.sqlite_version
    ratio = {k: (sled[k] / sqlite[k] if sqlite[k] else None) for k in FIGURES}
    json.dump({"sled": sled, "sqlite": sqlite, "ratio_sled_over_sqlite": ratio}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
