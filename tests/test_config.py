"""Settings: overrides → environment → .env → defaults, and validation naming the setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from goldenloop.config import SETTINGS, Setting, Settings, SettingsError, load_settings


def write_dotenv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_settings_table_and_the_dataclass_agree() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    assert fields == {s.name: s.default for s in SETTINGS}
    for setting in SETTINGS:
        assert isinstance(setting.default, setting.type), setting.name
        assert setting.help.strip(), setting.name


def test_env_var_names_are_prefixed_and_upper_case() -> None:
    assert Setting("max_queue_spans", int, 1, "h").env_var == "GOLDENLOOP_MAX_QUEUE_SPANS"


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    assert load_settings(environ={}, dotenv=tmp_path / "missing.env") == Settings()
    assert load_settings(environ={}, dotenv=None) == Settings()


def test_environment_beats_dotenv_beats_defaults(tmp_path: Path) -> None:
    dotenv = write_dotenv(
        tmp_path, "GOLDENLOOP_PORT=5000\nGOLDENLOOP_HOST=0.0.0.0\nGOLDENLOOP_LOG_LEVEL=debug\n"
    )
    settings = load_settings(environ={"GOLDENLOOP_PORT": "6000", "UNRELATED": "x"}, dotenv=dotenv)
    assert settings.port == 6000  # environment wins over .env
    assert settings.host == "0.0.0.0"  # only in .env
    assert settings.log_level == "debug"
    assert settings.db == "goldenloop.duckdb"  # default


def test_overrides_beat_the_environment_and_none_means_not_given(tmp_path: Path) -> None:
    dotenv = write_dotenv(tmp_path, "GOLDENLOOP_PORT=5000\n")
    settings = load_settings(
        overrides={"port": 7000, "host": None, "db": "cli.duckdb"},
        environ={"GOLDENLOOP_PORT": "6000", "GOLDENLOOP_HOST": "10.0.0.1"},
        dotenv=dotenv,
    )
    assert (settings.port, settings.host, settings.db) == (7000, "10.0.0.1", "cli.duckdb")


def test_overrides_given_as_strings_are_coerced() -> None:
    settings = load_settings(overrides={"max_queue_spans": "1_000"}, environ={}, dotenv=None)
    assert settings.max_queue_spans == 1000


def test_dotenv_in_the_working_directory_is_read_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dotenv(tmp_path, "GOLDENLOOP_DEFAULT_PROJECT=from-dotenv\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(environ={}).default_project == "from-dotenv"


def test_the_process_environment_is_used_when_none_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOLDENLOOP_MAX_ATTRIBUTE_BYTES", "4096")
    assert load_settings(dotenv=None).max_attribute_bytes == 4096


def test_dotenv_syntax(tmp_path: Path) -> None:
    dotenv = write_dotenv(
        tmp_path,
        "\n".join(
            [
                "# a comment",
                "",
                "export GOLDENLOOP_DB = 'quoted path.duckdb' ",
                'GOLDENLOOP_PUBLIC_URL="https://gl.example.com/"',
                "GOLDENLOOP_API_KEYS=shop:k=1",
                "not a setting line",
                "GOLDENLOOP_PORT=4_319",
            ]
        ),
    )
    settings = load_settings(environ={}, dotenv=dotenv)
    assert settings.db == "quoted path.duckdb"
    assert settings.public_url == "https://gl.example.com/"
    assert settings.base_url == "https://gl.example.com"
    assert settings.project_keys() == {"k=1": "shop"}  # only the first '=' splits
    assert settings.port == 4319


@pytest.mark.parametrize("value", ["abc", "", "1.5", "12 ports"])
def test_a_bad_integer_names_the_env_var(value: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings(environ={"GOLDENLOOP_PORT": value}, dotenv=None)
    assert str(excinfo.value) == f"GOLDENLOOP_PORT: expected an integer, got {value!r}"


def test_a_bad_integer_in_dotenv_names_the_env_var(tmp_path: Path) -> None:
    dotenv = write_dotenv(tmp_path, "GOLDENLOOP_MAX_QUEUE_SPANS=lots\n")
    with pytest.raises(SettingsError, match="GOLDENLOOP_MAX_QUEUE_SPANS: expected an integer"):
        load_settings(environ={}, dotenv=dotenv)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("port", "0", "GOLDENLOOP_PORT: must be positive"),
        ("max_request_bytes", "-1", "GOLDENLOOP_MAX_REQUEST_BYTES: must be positive"),
        ("max_attribute_bytes", "0", "GOLDENLOOP_MAX_ATTRIBUTE_BYTES: must be positive"),
        ("max_queue_spans", "0", "GOLDENLOOP_MAX_QUEUE_SPANS: must be positive"),
        ("batch_max_spans", "-5", "GOLDENLOOP_BATCH_MAX_SPANS: must be positive"),
        ("oldest_span_days", "0", "GOLDENLOOP_OLDEST_SPAN_DAYS: must be positive"),
        ("batch_max_wait_ms", "-1", "GOLDENLOOP_BATCH_MAX_WAIT_MS: must not be negative"),
        ("max_clock_skew_hours", "-1", "GOLDENLOOP_MAX_CLOCK_SKEW_HOURS: must not be negative"),
    ],
)
def test_out_of_range_numbers_name_the_env_var(name: str, value: str, message: str) -> None:
    env_var = "GOLDENLOOP_" + name.upper()
    with pytest.raises(SettingsError, match=message):
        load_settings(environ={env_var: value}, dotenv=None)


def test_zero_wait_and_zero_skew_are_allowed() -> None:
    settings = load_settings(
        environ={"GOLDENLOOP_BATCH_MAX_WAIT_MS": "0", "GOLDENLOOP_MAX_CLOCK_SKEW_HOURS": "0"},
        dotenv=None,
    )
    assert (settings.batch_max_wait_ms, settings.max_clock_skew_hours) == (0, 0)


def test_unknown_overrides_are_rejected_by_name() -> None:
    with pytest.raises(SettingsError, match="unknown setting\\(s\\): colour, portt"):
        load_settings(overrides={"portt": 1, "colour": "red"}, environ={}, dotenv=None)


def test_api_keys_map_keys_to_projects() -> None:
    settings = load_settings(
        environ={"GOLDENLOOP_API_KEYS": " shop:k1 , bank:k2,,shop:k3 "}, dotenv=None
    )
    assert settings.project_keys() == {"k1": "shop", "k2": "bank", "k3": "shop"}
    assert Settings().project_keys() == {}
    assert Settings(api_keys="shop:k1,shop:k1").project_keys() == {"k1": "shop"}


@pytest.mark.parametrize(
    ("api_keys", "shown"),
    [
        ("shop:k1,bank", "an entry without ':'"),
        ("sk-live-secret", "an entry without ':'"),
        ("shop:k1,bank:", "'bank'…"),
        (":orphan-key", "''…"),
    ],
)
def test_a_bad_api_keys_entry_is_rejected_without_echoing_the_key(
    api_keys: str, shown: str
) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings(environ={"GOLDENLOOP_API_KEYS": api_keys}, dotenv=None)
    message = str(excinfo.value)
    assert message.startswith("api_keys: each entry must look like 'project:key'")
    assert message.endswith(shown)
    for secret in ("k1", "sk-live-secret", "orphan-key"):
        assert secret not in message


def test_one_key_for_two_projects_is_rejected() -> None:
    with pytest.raises(SettingsError, match="both 'shop' and 'bank'"):
        load_settings(overrides={"api_keys": "shop:same,bank:same"}, environ={}, dotenv=None)


def test_secrets_stay_out_of_the_repr() -> None:
    settings = Settings(api_keys="shop:hunter2", database_url="postgresql://u:pw-xyz@db/gl")
    text = repr(settings)
    assert "hunter2" not in text and "pw-xyz" not in text
    assert [s.name for s in SETTINGS if s.secret] == ["database_url", "api_keys"]


def test_derived_properties_and_replace() -> None:
    settings = Settings(host="0.0.0.0", port=9000)
    assert settings.base_url == "http://0.0.0.0:9000"
    assert not settings.uses_postgres
    assert Settings(database_url="postgresql://db/gl").uses_postgres
    changed = settings.replace(port=9100, host=None)
    assert (changed.port, changed.host) == (9100, "0.0.0.0")
    assert settings.port == 9000  # frozen: replace makes a copy
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_ingest_workers_auto_leaves_a_core_to_the_server_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert load_settings(environ={}, dotenv=None).decode_workers == 7
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert load_settings(environ={}, dotenv=None).decode_workers == 1
    fixed = load_settings(environ={"GOLDENLOOP_INGEST_WORKERS": "0"}, dotenv=None)
    assert fixed.decode_workers == 0


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_a_bad_ingest_worker_count_names_the_env_var(value: str) -> None:
    with pytest.raises(SettingsError, match="GOLDENLOOP_INGEST_WORKERS.*'auto'"):
        load_settings(environ={"GOLDENLOOP_INGEST_WORKERS": value}, dotenv=None)
