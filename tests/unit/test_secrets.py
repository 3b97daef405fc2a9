"""Secrets stay secret: the one DSN redactor (every libpq form) and the settings' repr."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from flagsched.devstack.endpoints import Endpoints
from flagsched.runtime.db.connect import connect
from flagsched.runtime.db.dsn import MASK, UNPARSABLE, dsn_problem, redact_dsn
from flagsched.runtime.errors import ConfigError
from flagsched.runtime.settings import load_settings

# Printable characters libpq must carry in a password, the awkward ones included.
_CHARS = st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs"))
passwords = st.text(_CHARS, min_size=1, max_size=30).map(lambda s: f"Pw9{s}Zq")


def url_form(password: str) -> str:
    return f"postgresql://app:{quote(password, safe='')}@db.example:5433/flags?sslmode=disable"


def query_form(password: str) -> str:
    return f"postgresql://app@db.example:5433/flags?password={quote(password, safe='')}"


def keyvalue_form(password: str) -> str:
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    return f"host=db.example port=5433 user=app password='{escaped}' dbname=flags"


FORMS = {"url": url_form, "query": query_form, "keyvalue": keyvalue_form}


@pytest.mark.parametrize("form", FORMS)
@given(password=passwords)
def test_no_form_of_dsn_shows_its_password(form, password):
    dsn = FORMS[form](password)
    assert conninfo_to_dict(dsn)["password"] == password  # the form carries it
    shown = redact_dsn(dsn)
    assert password not in shown
    assert quote(password, safe="") not in shown
    params = conninfo_to_dict(shown)
    assert params.pop("password") == MASK
    original = conninfo_to_dict(dsn)
    del original["password"]
    assert params == original  # everything but the secret is still shown


def test_the_client_key_password_is_a_secret_too():
    shown = redact_dsn("host=db user=app sslpassword=Pw9keyZq sslkey=/k.pem")
    assert "Pw9keyZq" not in shown
    assert "sslkey=/k.pem" in shown


def test_a_dsn_without_a_secret_is_shown_as_written():
    assert redact_dsn("postgresql://app@db/flags") == "postgresql://app@db/flags"


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:Pw9 spaced Zq@db/flags",  # libpq quotes the password in its error
        "host=db password",
        "postgresql://app@db/flags?Pw9bogusZq=1",
    ],
)
def test_an_unparsable_dsn_never_shows_any_piece_of_itself(dsn):
    assert redact_dsn(dsn) == UNPARSABLE
    problem = dsn_problem(dsn)
    assert problem is not None
    assert "Pw9" not in problem


def test_settings_repr_str_and_dump_hide_every_credential():
    settings = load_settings(
        kafka_bootstrap_servers="127.0.0.1:1",
        database_url=keyvalue_form("Pw9dbZq"),
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="app",
        kafka_sasl_password="Pw9saslZq",
    )
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "Pw9dbZq" not in text and "Pw9saslZq" not in text
    assert "Pw9dbZq" in settings.require_database_url()  # the clients still get it
    assert settings.kafka_client_config()["sasl_plain_password"] == "Pw9saslZq"
    moved = settings.with_database_url(url_form("Pw9otherZq"))
    assert "Pw9otherZq" not in repr(moved)
    assert "Pw9otherZq" in moved.require_database_url()
    # model_copy does not validate: a plain string is still wrapped as a secret
    copied = settings.model_copy(update={"database_url": url_form("Pw9copyZq")})
    assert "Pw9copyZq" not in repr(copied)
    assert "Pw9copyZq" in copied.require_database_url()


def test_a_malformed_dsn_fails_at_load_naming_the_setting_without_its_password():
    with pytest.raises(ConfigError, match="FLAGSCHED_DATABASE_URL") as caught:
        load_settings(database_url="postgresql://app:Pw9 spaced Zq@db/flags")
    assert "Pw9" not in str(caught.value)
    # Not chained to pydantic's error, whose text quotes the input.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_endpoints_repr_hides_the_password_but_export_lines_carry_it():
    endpoints = Endpoints("127.0.0.1:9092", url_form("Pw9devZq"))
    assert "Pw9devZq" not in repr(endpoints)
    # `flagsched dev env` / `dev up` print these for `eval`: the shell needs the value.
    assert any("Pw9devZq" in line for line in endpoints.export_lines())


def test_connect_refuses_an_unparsable_dsn_without_quoting_it():
    with pytest.raises(ConfigError, match="FLAGSCHED_DATABASE_URL") as caught:
        connect("postgresql://app:Pw9 spaced Zq@db/flags")
    assert "Pw9" not in str(caught.value)
    assert caught.value.__cause__ is None


# A value that looks like a credential, put where it fails validation.
LEAK = "Pw9-hunter2-s3cr3t-Zq"


def _all_text(exc: BaseException) -> str:
    """Everything a log or traceback could show of ``exc``, its chain included."""
    import traceback

    return "".join(traceback.format_exception(exc))


@pytest.mark.parametrize(
    ("env", "loader"),
    [
        ("FLAGSCHED_ADMIN_PORT", "admin"),
        ("FLAGSCHED_ADMIN_OIDC_LEEWAY_S", "admin"),
        ("FLAGSCHED_ADMIN_OIDC_ALGORITHMS", "admin"),
        ("FLAGSCHED_NOTIFY_HTTP_TIMEOUT_S", "notify"),
        ("FLAGSCHED_NOTIFY_ALLOW_INSECURE", "notify"),
        ("FLAGSCHED_NOTIFY_MAX_ATTEMPTS", "notify"),
    ],
)
def test_a_bad_value_is_named_by_its_setting_and_never_echoed(monkeypatch, env, loader):
    from flagsched.admin.settings import load_admin_settings
    from flagsched.notifier.settings import load_notify_settings

    monkeypatch.setenv(env, LEAK)
    load = load_admin_settings if loader == "admin" else load_notify_settings
    with pytest.raises(ConfigError) as caught:
        load()
    assert env in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert LEAK not in _all_text(caught.value)


def test_a_bad_rules_file_names_the_key_and_never_echoes_a_secret(tmp_path):
    from flagsched.notifier.config import load_config, parse_config

    with pytest.raises(ConfigError) as caught:  # a secret that fails its own validator
        parse_config(
            {
                "sinks": {
                    "hook": {"type": "webhook", "url": "https://h.example/x", "secrets": [LEAK]}
                },
                "rules": [],
            }
        )
    assert "sinks.hook" in str(caught.value)
    assert LEAK not in _all_text(caught.value)
    broken = {
        "notify.yaml": f"sinks:\n  slack: {{type: slack, url: https://x.example/{LEAK}: x}}\n",
        "notify.toml": f'[sinks.pd]\ntype = "pagerduty"\nrouting_key = "{LEAK}\n',
    }
    for name, text in broken.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        message = str(caught.value)
        assert "not valid" in message and "at line " in message, message
        assert LEAK not in _all_text(caught.value), name
