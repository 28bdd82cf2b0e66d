"""The server keeps heavy libraries out of memory until a feature that needs them runs
(issue 2: resident memory while ingesting). Each check runs in a fresh interpreter,
since this test process has long imported everything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

#: Only clustering, anonymization, eval runs and a Prometheus scrape may load these.
HEAVY = (
    "scipy",
    "sklearn",
    "presidio_analyzer",
    "presidio_anonymizer",
    "spacy",
    "jsonschema",
    "prometheus_client",
)

_SERVE_AND_VISIT = """
import json, sys
from fastapi.testclient import TestClient
import goldenloop.cli
from goldenloop.config import Settings
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

store = DuckDBStore(sys.argv[1])
store.migrate()
statuses = {}
with TestClient(create_app(Settings(db=sys.argv[1]), store)) as client:
    for path in sys.argv[2:]:
        statuses[path] = client.get(path).status_code
store.close()
print(json.dumps({"statuses": statuses, "heavy": [m for m in %r if m in sys.modules]}))
"""


def test_serving_pages_loads_no_heavy_library(tmp_path: Path) -> None:
    pages = ["/", "/overview/regressions", "/sessions", "/golden", "/evals", "/triage", "/alerts"]
    script = _SERVE_AND_VISIT % (HEAVY,)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "g.duckdb"), *pages],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["statuses"] == {page: 200 for page in pages}
    assert report["heavy"] == []
