"""Recurring failure themes: cluster flagged sessions by intent and failure signal.

Each flagged session is described twice: by what the user asked (their messages,
embedded by the chosen embedder, default TF-IDF + TruncatedSVD with no model
download; see ``embedders``) and by its failure signals (the rules that flagged it,
error types, tools, guardrails, judges, feedback categories). The two unit-length
blocks sit side by side (``signal_weight`` balances them) and k-means groups
them (k = sqrt(n / 5) within [k_min, k_max] unless given). Each cluster gets top
terms, exemplar sessions (closest to the centre), size, this week vs last week and
share of flags. Same data and seed, same clusters.
"""

from __future__ import annotations

import json
import math
import uuid
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from goldenloop.flags._sql import insert_rows, is_root, naive, utcnow
from goldenloop.store.base import Store
from goldenloop.triage.embedders import get_embedder

#: Words too common in support traffic to name a cluster.
_STOP = frozenset(
    "the a an and or to of for in on at is are be can do does did i my me you your we our it "
    "this that with from how what when where why which will would could should please hi "
    "hello hallo bonjour hola hoi ciao ola olá thanks thank again sorry mean no yes not if "
    "there have has get any about was were am just ich der die das und ist wie mein je le la "
    "les de des est pour un une el los las que por mi".split()
)


@dataclass(frozen=True)
class ClusterParams:
    #: Number of clusters; None: ``sqrt(n / 5)`` clamped to [k_min, k_max].
    k: int | None = None
    k_min: int = 4
    k_max: int = 40
    seed: int = 7
    embedder: str = "lsa"
    #: Weight of the failure-signal block against the text block (both unit length).
    signal_weight: float = 1.5
    exemplars: int = 3
    top_terms: int = 5
    #: Weeks of flags to cluster (trend compares the last two).
    weeks: int = 2

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise ValueError(f"k: must be at least 1, got {self.k}")
        if not 1 <= self.k_min <= self.k_max:
            raise ValueError(
                f"k_min/k_max: need 1 <= k_min <= k_max, got {self.k_min}, {self.k_max}"
            )
        if self.weeks < 1:
            raise ValueError(f"weeks: must be at least 1, got {self.weeks}")
        if self.signal_weight < 0:
            raise ValueError(f"signal_weight: must be 0 or more, got {self.signal_weight}")

    def k_for(self, n: int) -> int:
        """The number of clusters for ``n`` sessions."""
        if self.k is not None:
            return max(1, min(self.k, n))
        return max(
            1,
            min(
                n, self.k_min if n < 5 * self.k_min**2 else min(self.k_max, round(math.sqrt(n / 5)))
            ),
        )


@dataclass
class SessionDoc:
    session_id: str
    project: str
    flagged_at: datetime
    rules: list[str]
    messages: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.messages)[:1200]

    def signal_document(self) -> str:
        return " ".join([f"rule={r}" for r in self.rules] + self.signals)


@dataclass
class Cluster:
    cluster_id: int
    rank: int
    label: str
    top_terms: list[str]
    size: int
    this_week: int
    last_week: int
    share: float
    rules: dict[str, int]
    exemplars: list[str]
    members: list[str]

    @property
    def trend(self) -> str:
        if self.last_week == 0:
            return "new" if self.this_week else "flat"
        change = (self.this_week - self.last_week) / self.last_week
        return f"{change:+.0%}"

    def to_dict(self, *, members: bool = False) -> dict[str, Any]:
        data = {
            "cluster_id": self.cluster_id,
            "rank": self.rank,
            "label": self.label,
            "top_terms": self.top_terms,
            "size": self.size,
            "this_week": self.this_week,
            "last_week": self.last_week,
            "trend": self.trend,
            "share": round(self.share, 4),
            "rules": self.rules,
            "exemplars": self.exemplars,
        }
        if members:
            data["members"] = self.members
        return data


@dataclass
class ClusterRun:
    id: str
    created_at: datetime
    window_from: datetime
    window_to: datetime
    params: ClusterParams
    sessions: int
    clusters: list[Cluster]

    def to_dict(self, *, members: bool = False) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat() + "Z",
            "window_from": self.window_from.isoformat() + "Z",
            "window_to": self.window_to.isoformat() + "Z",
            "embedder": self.params.embedder,
            "seed": self.params.seed,
            "sessions": self.sessions,
            "clusters": [c.to_dict(members=members) for c in self.clusters],
        }

    def assignments(self) -> dict[str, int]:
        return {sid: c.cluster_id for c in self.clusters for sid in c.members}


# -- documents ------------------------------------------------------------------------------


_DETAIL_KEYS = ("category", "error_type", "tool", "guardrail", "judge", "signals", "model")
#: Causes (error types, tools, guardrails, judges, feedback categories) say more about a
#: failure theme than reactions (which rules fired: thumbs-down, rephrase, abandon …).
_SIGNAL_KIND_WEIGHT = {"rule": 0.4, "signals": 0.4, "model": 0.3}


def _detail_signals(raw: str) -> list[str]:
    """``key=value`` tokens from a flag's details (tool, error type, guardrail …)."""
    try:
        details = json.loads(raw)
    except ValueError:
        return []
    tokens = []
    for key in _DETAIL_KEYS:
        value = details.get(key) if isinstance(details, dict) else None
        if not value:
            continue
        for part in str(value).split(","):
            word = "_".join(part.split())
            if word:
                tokens.append(f"{key}={word}"[:80])
    return tokens


def flagged_documents(store: Store, since: datetime, until: datetime) -> list[SessionDoc]:
    """One document per session flagged (any status) in ``[since, until)``."""
    flags = store.fetch(
        "SELECT session_id, min(project), min(event_time), string_agg(DISTINCT rule, ',') "
        "FROM flags WHERE event_time >= ? AND event_time < ? GROUP BY session_id "
        "ORDER BY session_id",
        (since, until),
    )
    docs = {
        r[0]: SessionDoc(r[0], r[1], r[2], sorted(set((r[3] or "").split(",")) - {""}))
        for r in flags
    }
    if not docs:
        return []
    for session_id, details in store.fetch(
        "SELECT session_id, details FROM flags WHERE event_time >= ? AND event_time < ? "
        "AND details IS NOT NULL ORDER BY session_id, rule",
        (since, until),
    ):
        docs[session_id].signals.extend(_detail_signals(details))
    floor = min(d.flagged_at for d in docs.values()) - timedelta(days=2)
    in_window = "SELECT session_id FROM flags WHERE event_time >= ? AND event_time < ?"
    rows = store.fetch(
        f"SELECT session_id, start_time, trace_id, input_text FROM spans WHERE start_time >= ? "
        f"AND session_id IN ({in_window}) AND {is_root()} AND input_text IS NOT NULL "
        "ORDER BY session_id, start_time, trace_id",
        (floor, since, until),
    )
    for session_id, _start, _trace, text in rows:
        doc = docs.get(session_id)
        if doc is not None and len(doc.messages) < 4:
            doc.messages.append(str(text)[:400])
    errors = store.fetch(
        f"SELECT session_id, kind, error_type FROM spans WHERE start_time >= ? "
        f"AND session_id IN ({in_window}) AND status = 'error' "
        "GROUP BY session_id, kind, error_type ORDER BY session_id, kind, error_type",
        (floor, since, until),
    )
    for session_id, kind, error_type in errors:
        if session_id in docs:
            # Which layer failed (llm, tool, retrieval …) groups e.g. every provider's
            # errors in an outage; the error type tells them apart.
            docs[session_id].signals.append("failed=" + str(kind))
            if error_type:
                docs[session_id].signals.append("error_type=" + str(error_type))
    feedback = store.fetch(
        f"SELECT session_id, category FROM feedback WHERE rating = 'down' AND category IS NOT NULL "
        f"AND session_id IN ({in_window}) GROUP BY session_id, category "
        "ORDER BY session_id, category",
        (since, until),
    )
    for session_id, category in feedback:
        if session_id in docs:
            docs[session_id].signals.append("category=" + str(category))
    for doc in docs.values():
        doc.signals = sorted(set(doc.signals))
    return [docs[k] for k in sorted(docs)]


# -- clustering -----------------------------------------------------------------------------


#: Up to this many sessions, full k-means (10 k-means++ restarts) for stable themes;
#: beyond it MiniBatchKMeans keeps time and memory bounded.
FULL_KMEANS_LIMIT = 50_000


def _kmeans(
    vectors: NDArray[np.float64], k: int, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    from sklearn.cluster import (  # type: ignore[import-untyped, unused-ignore]
        KMeans,
        MiniBatchKMeans,
    )
    from sklearn.exceptions import (  # type: ignore[import-untyped, unused-ignore]
        ConvergenceWarning,
    )

    if len(vectors) <= FULL_KMEANS_LIMIT:
        model = KMeans(n_clusters=k, random_state=seed, n_init=10)
    else:
        model = MiniBatchKMeans(
            n_clusters=k, random_state=seed, n_init=3, batch_size=4096, max_iter=200
        )
    with warnings.catch_warnings():
        # Fewer distinct sessions than clusters (duplicates) is fine: some clusters repeat.
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = model.fit_predict(vectors)
    return labels.astype(np.int64), np.asarray(model.cluster_centers_, dtype=np.float64)


def embed_documents(docs: Sequence[SessionDoc], params: ClusterParams) -> NDArray[np.float64]:
    """Text block (the embedder) beside the failure-signal block (binary TF-IDF of
    rules, error types, tools, guardrails, feedback categories), each unit length."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped, unused-ignore]

    text = get_embedder(params.embedder).embed([d.text for d in docs], seed=params.seed)
    signals = [d.signal_document() for d in docs]
    if params.signal_weight == 0 or not any(signals):
        return text
    vectorizer = TfidfVectorizer(token_pattern=r"\S+", binary=True, lowercase=False)
    matrix = vectorizer.fit_transform(signals)
    weights = np.array(
        [
            _SIGNAL_KIND_WEIGHT.get(t.split("=", 1)[0], 1.0)
            for t in vectorizer.get_feature_names_out()
        ]
    )
    dense = np.asarray(matrix.todense(), dtype=np.float64) * weights
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    combined = np.hstack([text, dense / norms * params.signal_weight])
    lengths = np.linalg.norm(combined, axis=1, keepdims=True)
    lengths[lengths == 0] = 1.0
    return np.asarray(combined / lengths, dtype=np.float64)


def _top_terms(
    docs: Sequence[SessionDoc], labels: NDArray[np.int64], count: int
) -> dict[int, list[str]]:
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped, unused-ignore]

    texts = [d.text for d in docs]
    try:
        vectorizer = TfidfVectorizer(
            stop_words=sorted(_STOP), token_pattern=r"(?u)\b[^\W\d_]{3,}\b", min_df=2,
            max_features=30_000, sublinear_tf=True,
        )  # fmt: skip
        matrix = vectorizer.fit_transform(texts)
    except ValueError:  # no words at all (e.g. every message empty)
        return {int(c): [] for c in set(labels.tolist())}
    terms = vectorizer.get_feature_names_out()
    result: dict[int, list[str]] = {}
    for cluster in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == cluster)
        weights = np.asarray(matrix[rows].mean(axis=0)).ravel()
        top = np.argsort(-weights, kind="stable")[:count]
        result[int(cluster)] = [str(terms[i]) for i in top if weights[i] > 0]
    return result


def build_clusters(
    docs: Sequence[SessionDoc], params: ClusterParams, *, now: datetime
) -> list[Cluster]:
    if not docs:
        return []
    now = naive(now)
    vectors = embed_documents(docs, params)
    labels, centres = _kmeans(vectors, params.k_for(len(docs)), params.seed)
    terms = _top_terms(docs, labels, params.top_terms)
    week_ago, two_weeks_ago = now - timedelta(days=7), now - timedelta(days=14)
    clusters = []
    for cluster in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == cluster)
        members = [docs[int(i)] for i in rows]
        centre = centres[cluster]
        similarity = vectors[rows] @ centre
        order = np.lexsort((np.array([d.session_id for d in members]), -similarity))
        rules = Counter(r for d in members for r in d.rules)
        top_rules = [r for r, _ in rules.most_common(2)]
        words = terms.get(int(cluster), [])
        label = " · ".join(words[:3]) or "(no text)"
        if top_rules:
            label += " — " + ", ".join(top_rules)
        clusters.append(
            Cluster(
                cluster_id=int(cluster),
                rank=0,
                label=label,
                top_terms=words,
                size=len(rows),
                this_week=sum(1 for d in members if d.flagged_at >= week_ago),
                last_week=sum(1 for d in members if two_weeks_ago <= d.flagged_at < week_ago),
                share=len(rows) / len(docs),
                rules=dict(rules.most_common()),
                exemplars=[members[i].session_id for i in order[: params.exemplars]],
                members=sorted(d.session_id for d in members),
            )  # fmt: skip
        )
    clusters.sort(key=lambda c: (-c.size, c.cluster_id))
    for rank, c in enumerate(clusters, start=1):
        c.rank = rank
    return clusters


# -- runs -----------------------------------------------------------------------------------


def cluster_flags(
    store: Store, params: ClusterParams | None = None, *, now: datetime | None = None
) -> ClusterRun:
    """Cluster the sessions flagged in the last ``params.weeks`` weeks and store the run."""
    params = params or ClusterParams()
    clock = naive(now) if now else utcnow()
    since = clock - timedelta(weeks=params.weeks)
    docs = flagged_documents(store, since, clock)
    run = ClusterRun(uuid.uuid4().hex, utcnow(), since, clock, params, len(docs),
                     build_clusters(docs, params, now=clock))  # fmt: skip
    save_run(store, run)
    return run


def save_run(store: Store, run: ClusterRun) -> None:
    p = run.params
    store.execute(
        "INSERT INTO cluster_runs (id, created_at, window_from, window_to, embedder, seed, "
        "sessions, cluster_count, params) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (run.id, run.created_at, run.window_from, run.window_to, p.embedder, p.seed,
         run.sessions, len(run.clusters), json.dumps(p.__dict__)),
    )  # fmt: skip
    insert_rows(
        store,
        "clusters",
        ("run_id", "cluster_id", "rank", "label", "top_terms", "size", "this_week",
         "last_week", "share", "rules", "exemplars", "members"),
        [(run.id, c.cluster_id, c.rank, c.label, json.dumps(c.top_terms), c.size, c.this_week,
          c.last_week, c.share, json.dumps(c.rules), json.dumps(c.exemplars),
          json.dumps(c.members)) for c in run.clusters],
        chunk=20,
    )  # fmt: skip


def latest_run(store: Store) -> ClusterRun | None:
    rows = store.fetch(
        "SELECT id, created_at, window_from, window_to, sessions, params FROM cluster_runs "
        "ORDER BY created_at DESC, id LIMIT 1"
    )
    if not rows:
        return None
    run_id, created_at, since, until, sessions, raw_params = rows[0]
    params = ClusterParams(**json.loads(raw_params))
    clusters = [
        Cluster(
            cluster_id=int(r[0]),
            rank=int(r[1]),
            label=r[2],
            top_terms=json.loads(r[3]),
            size=int(r[4]),
            this_week=int(r[5]),
            last_week=int(r[6]),
            share=float(r[7]),
            rules=json.loads(r[8]),
            exemplars=json.loads(r[9]),
            members=json.loads(r[10]),
        )  # fmt: skip
        for r in store.fetch(
            "SELECT cluster_id, rank, label, top_terms, size, this_week, last_week, share, "
            "rules, exemplars, members FROM clusters WHERE run_id = ? ORDER BY rank",
            (run_id,),
        )
    ]
    return ClusterRun(run_id, created_at, since, until, params, int(sessions), clusters)
