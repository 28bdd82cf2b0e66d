"""PII and secret removal before anything leaves the store for a golden case.

PII is found by Presidio's analyzer with the built-in ``no_op`` NLP engine (no model is
loaded or downloaded) and only pattern/validator recognizers, asked explicitly for
``BUILTIN_ENTITIES`` plus the team's own patterns; it is replaced by Presidio's
anonymizer. Secrets are found by ``goldenloop.golden.secrets``. Both become numbered
placeholders that are consistent within a case: the same address is ``<EMAIL_1>``
everywhere in the case, a second one ``<EMAIL_2>``.

Everything runs offline: the email recognizer validates domains with ``tldextract``'s
bundled public-suffix snapshot, never the network.

Teams add patterns (and never-redact strings) in ``_anonymize.yaml`` in the set::

    patterns:
      - {name: CUSTOMER_ID, regex: 'CUST-\\d{8}'}
    allow: [support@our-shop.example]
    phone_regions: [US, GB, DE, FR]
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from goldenloop.golden.secrets import find_secrets

#: Presidio entity → placeholder label.
ENTITY_LABELS: Final[dict[str, str]] = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP_ADDRESS",
    "US_SSN": "SSN",
}
BUILTIN_ENTITIES: Final = tuple(ENTITY_LABELS)
DEFAULT_PHONE_REGIONS: Final = (
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "IE", "IN", "BR", "JP", "CA", "AU",
)  # fmt: skip
#: Results below this score are kept only with a context word just before them.
SCORE_THRESHOLD: Final = 0.3
_CONTEXT_WORDS: Final[dict[str, tuple[str, ...]]] = {
    "US_SSN": ("ssn", "social security", "social-security", "sozialversicherung"),
}
_CONTEXT_WINDOW: Final = 40
PLACEHOLDER_RE: Final = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")
CONFIG_FILE: Final = "_anonymize.yaml"
_LAST_LABEL: Final = re.compile(r"@[^@\s]+\.[^\W\d_]{2,24}$")


class AnonymizeConfigError(ValueError):
    pass


@dataclass(frozen=True)
class CustomPattern:
    """A team-specific identifier: ``name`` becomes the placeholder label."""

    name: str
    regex: str
    score: float = 0.9

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", self.name):
            raise AnonymizeConfigError(
                f"pattern name {self.name!r} must be UPPER_CASE (it becomes <{self.name}_N>)"
            )
        try:
            re.compile(self.regex)
        except re.error as exc:
            raise AnonymizeConfigError(f"pattern {self.name}: invalid regex: {exc}") from None


@dataclass(frozen=True)
class AnonymizerConfig:
    patterns: tuple[CustomPattern, ...] = ()
    allow: tuple[str, ...] = ()
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS
    high_entropy: bool = True

    @property
    def entities(self) -> tuple[str, ...]:
        return BUILTIN_ENTITIES + tuple(p.name for p in self.patterns)

    def label(self, entity: str) -> str:
        return ENTITY_LABELS.get(entity, entity)


def parse_anonymizer_config(data: Any) -> AnonymizerConfig:
    if data is None:
        return AnonymizerConfig()
    if not isinstance(data, dict):
        raise AnonymizeConfigError("must be a mapping with patterns, allow, phone_regions")
    unknown = set(data) - {"patterns", "allow", "phone_regions", "high_entropy"}
    if unknown:
        raise AnonymizeConfigError(f"unknown key(s) {sorted(unknown)}")
    patterns = []
    for i, item in enumerate(data.get("patterns") or []):
        if not isinstance(item, dict) or not {"name", "regex"} <= set(item):
            raise AnonymizeConfigError(f"patterns.{i}: needs 'name' and 'regex'")
        patterns.append(
            CustomPattern(str(item["name"]), str(item["regex"]), float(item.get("score", 0.9)))
        )
    regions = data.get("phone_regions") or DEFAULT_PHONE_REGIONS
    if not all(isinstance(r, str) and re.fullmatch(r"[A-Z]{2}", r) for r in regions):
        raise AnonymizeConfigError("phone_regions: two-letter region codes such as DE, US")
    return AnonymizerConfig(
        patterns=tuple(patterns),
        allow=tuple(str(a) for a in data.get("allow") or ()),
        phone_regions=tuple(regions),
        high_entropy=bool(data.get("high_entropy", True)),
    )


def load_anonymizer_config(root: Path | None) -> AnonymizerConfig:
    """The set's ``_anonymize.yaml`` (defaults when there is none)."""
    if root is None or not (Path(root) / CONFIG_FILE).is_file():
        return AnonymizerConfig()
    path = Path(root) / CONFIG_FILE
    try:
        return parse_anonymizer_config(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, AnonymizeConfigError) as exc:
        raise AnonymizeConfigError(f"{path}: {exc}") from None


def anonymize_config_problems(root: Path) -> list[Any]:
    from goldenloop.golden.casefiles import Problem

    try:
        load_anonymizer_config(root)
    except AnonymizeConfigError as exc:
        return [Problem(CONFIG_FILE, "", str(exc).split(": ", 1)[-1])]
    return []


# -- the Presidio engines ---------------------------------------------------------------


@dataclass(frozen=True)
class PiiHit:
    entity: str
    start: int
    end: int
    score: float


class PiiEngine:
    """Presidio analyzer (no_op NLP engine, pattern recognizers only) + anonymizer."""

    def __init__(self, config: AnonymizerConfig) -> None:
        import tldextract
        from presidio_analyzer import (
            AnalyzerEngine,
            Pattern,
            PatternRecognizer,
            RecognizerRegistry,
        )
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            UsSsnRecognizer,
        )
        from presidio_anonymizer import AnonymizerEngine

        # The bundled public-suffix snapshot: no download, ever.
        offline_tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

        class OfflineEmailRecognizer(EmailRecognizer):
            def validate_result(self, pattern_text: str) -> bool:
                # A public suffix, or any alphabetic last label: addresses at reserved
                # or internal domains (.example, .internal, .corp) are PII too.
                if offline_tld(pattern_text).fqdn:
                    return True
                return bool(_LAST_LABEL.search(pattern_text))

        recognizers = [
            OfflineEmailRecognizer(),
            PhoneRecognizer(supported_regions=config.phone_regions),
            CreditCardRecognizer(),
            IbanRecognizer(),
            IpRecognizer(),
            UsSsnRecognizer(),
        ]
        for custom in config.patterns:
            recognizers.append(
                PatternRecognizer(
                    supported_entity=custom.name,
                    patterns=[Pattern(custom.name, custom.regex, custom.score)],
                    name=f"goldenloop-{custom.name}",
                )
            )
        nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "no_op"}])
        nlp.load()
        registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
        self.config = config
        self._analyzer = AnalyzerEngine(
            nlp_engine=nlp, registry=registry, supported_languages=["en"]
        )
        self._anonymizer = AnonymizerEngine()  # type: ignore[no-untyped-call]

    def analyze(self, text: str) -> list[PiiHit]:
        """Non-overlapping PII in ``text`` (higher score, then longer span, wins)."""
        if not text.strip():
            return []
        results = self._analyzer.analyze(
            text,
            language="en",
            entities=list(self.config.entities),
            score_threshold=0.0,
            allow_list=list(self.config.allow) or None,
        )
        hits = [
            PiiHit(r.entity_type, r.start, r.end, r.score)
            for r in results
            if r.score >= SCORE_THRESHOLD or _has_context(text, r.entity_type, r.start)
        ]
        hits = [h for h in hits if not PLACEHOLDER_RE.fullmatch(text[h.start : h.end])]
        hits.sort(key=lambda h: (-h.score, -(h.end - h.start), h.start))
        kept: list[PiiHit] = []
        for hit in hits:
            if all(hit.end <= k.start or hit.start >= k.end for k in kept):
                kept.append(hit)
        return sorted(kept, key=lambda h: h.start)

    def replace(
        self, text: str, hits: Sequence[PiiHit], placeholder: Callable[[str, str], str]
    ) -> str:
        """Replace each hit with ``placeholder(entity, original)`` via Presidio's anonymizer."""
        from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

        if not hits:
            return text
        results = [RecognizerResult(h.entity, h.start, h.end, h.score) for h in hits]
        operators = {
            entity: OperatorConfig("custom", {"lambda": functools.partial(placeholder, entity)})
            for entity in {h.entity for h in hits}
        }
        result = self._anonymizer.anonymize(
            text=text,
            analyzer_results=results,
            operators=operators,
        )
        return str(result.text)


def _has_context(text: str, entity: str, start: int) -> bool:
    words = _CONTEXT_WORDS.get(entity)
    if not words:
        return False
    before = text[max(0, start - _CONTEXT_WINDOW) : start].lower()
    return any(w in before for w in words)


@functools.lru_cache(maxsize=8)
def pii_engine(config: AnonymizerConfig = AnonymizerConfig()) -> PiiEngine:
    """A shared engine per configuration (building one takes about a second)."""
    return PiiEngine(config)


# -- one case at a time ---------------------------------------------------------------


@dataclass(frozen=True)
class SecretFinding:
    """A secret found while promoting: rotate it. The value is never kept."""

    kind: str
    location: str
    placeholder: str
    fingerprint: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "location": self.location, "placeholder": self.placeholder,
                "fingerprint": self.fingerprint}  # fmt: skip


@dataclass
class AnonymizationReport:
    pii: Counter[str] = field(default_factory=Counter)
    secrets: list[SecretFinding] = field(default_factory=list)
    pseudonyms: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pii": dict(self.pii),
            "secrets": [s.to_dict() for s in self.secrets],
            "pseudonyms": sorted(self.pseudonyms.values()),
        }


#: Production ids shorter than this are replaced in id fields but not inside free text
#: ("42" as a user id must not turn every "42 days" into a pseudonym).
MIN_ID_LENGTH_IN_TEXT: Final = 4


def id_pattern(production_id: str) -> re.Pattern[str] | None:
    """Matches ``production_id`` as a whole token (``sess-1`` but not ``sess-10``)."""
    if len(production_id) < MIN_ID_LENGTH_IN_TEXT:
        return None
    return re.compile(rf"(?<![\w-]){re.escape(production_id)}(?![\w-])")


def _normalize(label: str, value: str) -> str:
    if label == "EMAIL":
        return value.strip().lower()
    if label in ("PHONE", "CREDIT_CARD", "IBAN", "SSN"):
        return re.sub(r"[^0-9A-Za-z]", "", value).upper()
    return value


class CaseAnonymizer:
    """Anonymizes every text of one case with consistent placeholders.

    ``known_ids`` maps production identifiers (user, session, message, trace ids) to
    pseudonyms; they are replaced literally wherever they appear, before anything else.
    """

    def __init__(
        self, engine: PiiEngine | None = None, known_ids: Mapping[str, str] | None = None
    ) -> None:
        self.engine = engine or pii_engine()
        self.known_ids = dict(known_ids or {})
        self.report = AnonymizationReport()
        self._placeholders: dict[tuple[str, str], str] = {}
        self._counters: Counter[str] = Counter()

    def placeholder(self, label: str, value: str) -> str:
        key = (label, _normalize(label, value))
        existing = self._placeholders.get(key)
        if existing is None:
            self._counters[label] += 1
            existing = f"<{label}_{self._counters[label]}>"
            self._placeholders[key] = existing
        return existing

    def _pii_placeholder(self, entity: str, original: str) -> str:
        return self.placeholder(self.engine.config.label(entity), original)

    def text(self, value: str, location: str = "") -> str:
        for production_id in sorted(self.known_ids, key=len, reverse=True):
            pattern = id_pattern(production_id)
            if pattern is not None and pattern.search(value):
                value = pattern.sub(self.known_ids[production_id], value)
                self.report.pseudonyms[production_id] = self.known_ids[production_id]
        for match in reversed(find_secrets(value, high_entropy=self.engine.config.high_entropy)):
            name = self.placeholder(f"SECRET_{match.kind}", match.value)
            self.report.secrets.append(SecretFinding(match.kind, location, name, match.fingerprint))
            value = value[: match.start] + name + value[match.end :]
        hits = self.engine.analyze(value)
        # Number placeholders in reading order (the anonymizer works from the end).
        for hit in hits:
            self._pii_placeholder(hit.entity, value[hit.start : hit.end])
            self.report.pii[self.engine.config.label(hit.entity)] += 1
        return self.engine.replace(value, hits, self._pii_placeholder)

    def data(self, value: Any, location: str = "") -> Any:
        """Anonymize every string inside lists and dicts (keys are left alone)."""
        if isinstance(value, str):
            return self.text(value, location)
        if isinstance(value, list):
            return [
                self.data(v, f"{location}.{i}" if location else str(i)) for i, v in enumerate(value)
            ]
        if isinstance(value, dict):
            return {
                k: self.data(v, f"{location}.{k}" if location else str(k)) for k, v in value.items()
            }
        return value


@dataclass(frozen=True)
class Leak:
    """Something sensitive still present in a text about to be written."""

    kind: str
    line: int
    preview: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind} {self.preview}"


def _mask(value: str) -> str:
    if len(value) <= 4:
        return "*" * len(value)
    return f"{value[:2]}{'*' * min(len(value) - 4, 12)}{value[-2:]}"


def scan_for_leaks(
    text: str, engine: PiiEngine | None = None, production_ids: Sequence[str] = ()
) -> list[Leak]:
    """PII, secrets and production ids left in ``text`` (shown masked)."""
    engine = engine or pii_engine()

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    leaks = [
        Leak(engine.config.label(h.entity), line_of(h.start), _mask(text[h.start : h.end]))
        for h in engine.analyze(text)
    ]
    leaks += [
        Leak(f"SECRET_{m.kind}", line_of(m.start), _mask(m.value))
        for m in find_secrets(text, high_entropy=engine.config.high_entropy)
    ]
    for production_id in production_ids:
        pattern = id_pattern(production_id)
        found = pattern.search(text) if pattern is not None else None
        if found:
            leaks.append(Leak("PRODUCTION_ID", line_of(found.start()), _mask(production_id)))
    return sorted(leaks, key=lambda leak: leak.line)
