"""Benchmark: clustering 100k flagged sessions (time, peak RSS, adjusted Rand index).

    .venv/bin/python benchmarks/clustering.py                    # 10k, 30k, 100k sessions
    .venv/bin/python benchmarks/clustering.py --sizes 100000 --runs 3

Data: the 10M-span simulated week of ``benchmarks/flags.py`` (built there if missing,
under ``--dir``), flagged once with the default rules. Each measurement runs in a fresh
process (so peak RSS is that of one clustering) over the first N flagged sessions
(by id: a deterministic sample): load their documents from the store, embed (TF-IDF +
TruncatedSVD and the failure-signal block), k-means, label, describe. Reported per
size: medians of ``--runs`` for documents, clustering and total seconds, peak RSS of the
process, the number of clusters, and the adjusted Rand index / homogeneity /
completeness against the simulator's failure themes (sessions of one injected failure
theme: EU prompt regression, provider outage, injection wave, order-service errors).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SOURCE_SPANS = 10_000_000


def _themes(manifest_path: Path) -> dict[str, str]:
    from goldenloop.sim import SimManifest

    manifest = SimManifest.from_dict(json.loads(manifest_path.read_text()))
    names = ("eu-prompt-regression", "provider-outage", "injection-wave", "order-service-errors")
    members = {n: set(manifest.scenarios[n].sessions) for n in names if n in manifest.scenarios}
    if "provider-outage" in members:
        members["provider-outage"] &= manifest.failures.get("provider_error", set())
    if "injection-wave" in members:
        members["injection-wave"] &= manifest.failures.get("injection", set())
    seen: dict[str, str] = {}
    clash = set()
    for name, ids in members.items():
        for sid in ids:
            if sid in seen:
                clash.add(sid)
            seen[sid] = name
    return {s: n for s, n in seen.items() if s not in clash}


def one(path: Path, size: int) -> dict[str, Any]:
    """Cluster the first ``size`` flagged sessions; runs in its own process."""
    from sklearn.metrics import adjusted_rand_score, homogeneity_completeness_v_measure

    from goldenloop.store.duckdb import DuckDBStore
    from goldenloop.triage.clustering import ClusterParams, build_clusters, flagged_documents

    store = DuckDBStore(path, read_only=True)
    try:
        end = store.fetch("SELECT max(event_time) FROM flags")[0][0] + timedelta(seconds=1)
        started = time.perf_counter()
        docs = flagged_documents(store, end - timedelta(weeks=2), end)[:size]
        loaded = time.perf_counter() - started
    finally:
        store.close()
    started = time.perf_counter()
    clusters = build_clusters(docs, ClusterParams(), now=end)
    clustered = time.perf_counter() - started
    themes = _themes(path.with_suffix(".manifest.json"))
    assignment = {sid: c.cluster_id for c in clusters for sid in c.members}
    pairs = [(themes[s], assignment[s]) for s in assignment if s in themes]
    truth, found = [t for t, _ in pairs], [c for _, c in pairs]
    homogeneity, completeness, _ = (
        homogeneity_completeness_v_measure(truth, found) if pairs else (0, 0, 0)
    )
    return {
        "sessions": len(docs),
        "documents_s": round(loaded, 3),
        "cluster_s": round(clustered, 3),
        "total_s": round(loaded + clustered, 3),
        "clusters": len(clusters),
        "themed_sessions": len(pairs),
        "ari": round(adjusted_rand_score(truth, found), 3) if pairs else None,
        "homogeneity": round(float(homogeneity), 3),
        "completeness": round(float(completeness), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "top": [c.label for c in clusters[:5]],
    }


def _prepare(directory: Path) -> Path:
    import flags as flag_bench

    from goldenloop.flags import run_incremental
    from goldenloop.store.duckdb import DuckDBStore

    path = directory / f"flags-{SOURCE_SPANS}.duckdb"
    if not path.exists():
        print(f"building {path}…", file=sys.stderr)
        flag_bench.build(path, SOURCE_SPANS)
    store = DuckDBStore(path)
    try:
        store.migrate()
        if store.fetch("SELECT count(*) FROM flags")[0][0] == 0:
            print("flagging the week…", file=sys.stderr)
            run_incremental(store, now=flag_bench.START + timedelta(days=flag_bench.DAYS, hours=1))
        flagged = store.fetch("SELECT count(DISTINCT session_id) FROM flags")[0][0]
        print(f"{flagged:,} flagged sessions available", file=sys.stderr)
    finally:
        store.close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/goldenloop-bench-flags"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.path, args.one)))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    path = _prepare(args.dir)
    for size in args.sizes:
        runs = []
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(size), "--path", str(path)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        result = dict(runs[-1])
        for key in ("documents_s", "cluster_s", "total_s"):
            result[key] = round(statistics.median(r[key] for r in runs), 3)
        result["total_runs_s"] = [r["total_s"] for r in runs]
        result["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
