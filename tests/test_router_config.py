"""Router configuration: TOML and YAML files, the seed's legacy keys, environment overrides, clear errors."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mamba_router.cli import main
from mamba_router.errors import ConfigurationError
from mamba_router.settings.schema import SECTIONS, load_config

LEGACY_YAML = """
model_routing:
  enable_mamba: false
mamba:
  real_model: /models/mamba-1.4b
  mamba2_model: /models/mamba2-780m
  fallback: transformer
  prefer_real: false
"""

TOML = """
[model_routing]
long_context_tokens = 8000
min_pages = 5
legal_keywords = ["writ", "decree"]
truncation = "keep_start"

[log]
log_text = true
max_bytes = 65536
"""


def test_the_seeds_yaml_keys_keep_working(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(LEGACY_YAML, encoding="utf-8")
    loaded = load_config(path, environ={})
    c = loaded.config
    assert c.model_routing.enable_mamba is False
    assert c.mamba.real_model == "/models/mamba-1.4b" and c.mamba.mamba2_model == "/models/mamba2-780m"
    assert c.mamba.fallback is True and c.mamba.prefer_real is False
    assert loaded.sources["mamba.real_model"] == f"file {path}"
    assert loaded.sources.get("model_routing.long_context_tokens", "default") == "default"


def test_toml_file_then_environment_then_arguments(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(TOML, encoding="utf-8")
    env = {"MAMBA_ROUTER__MODEL_ROUTING__MIN_PAGES": "7", "ENABLE_MAMBA": "off"}
    loaded = load_config(path, environ=env, overrides={"log.max_bytes": 8192})
    c = loaded.config
    assert c.model_routing.long_context_tokens == 8000 and c.model_routing.legal_keywords == ("writ", "decree")
    assert c.model_routing.min_pages == 7 and c.model_routing.enable_mamba is False
    assert c.log.max_bytes == 8192 and c.log.log_text is True
    assert loaded.sources["model_routing.min_pages"] == "env MAMBA_ROUTER__MODEL_ROUTING__MIN_PAGES"
    assert loaded.sources["model_routing.enable_mamba"] == "env ENABLE_MAMBA"
    assert loaded.sources["log.max_bytes"] == "argument"
    assert loaded.sources["model_routing.truncation"] == f"file {path}"


def test_the_file_can_come_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text("[model_routing]\nmin_pages = 9\n", encoding="utf-8")
    assert load_config(environ={"MAMBA_ROUTER_CONFIG": str(path)}).config.model_routing.min_pages == 9


identifiers = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12)


@settings(max_examples=60)
@given(section=st.sampled_from(sorted(SECTIONS)), key=identifiers)
def test_an_unknown_key_is_named_with_the_allowed_ones(tmp_path_factory, section, key) -> None:
    if key in SECTIONS[section].model_fields:
        return
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_text(f"[{section}]\n{key} = 1\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert f"'{section}.{key}'" in message and str(path) in message
    assert all(name in message for name in SECTIONS[section].model_fields)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("MODEL_ROUTING__TRUNCATION", "middle", "'off', 'keep_start' or 'keep_end'"),
        ("MODEL_ROUTING__LONG_CONTEXT_TOKENS", "0", "greater than or equal to 1"),
        ("MODEL_ROUTING__LONG_CONTEXT_TOKENS", "lots", "valid integer"),
        ("MODEL_ROUTING__RULES", "long_context,fancy", "'long_context', 'multi_page' or 'legal_keywords'"),
        ("MODEL_ROUTING__LEGAL_KEYWORDS", "writ, ---", "no letter or digit"),
        ("MAMBA__FALLBACK", "sometimes", "true or false"),
        ("GENERATION__DEVICE", "tpu", "'auto', 'cpu', 'cuda' or 'mps'"),
        ("LOG__BACKUPS", "-1", "greater than or equal to 0"),
        ("SERVE__SWITCH_INTERVAL_MS", "0", "greater than or equal to 0.05"),
    ],
)
def test_a_bad_value_names_the_key_its_source_and_the_allowed_values(key, value, expected) -> None:
    variable = f"MAMBA_ROUTER__{key}"
    with pytest.raises(ConfigurationError) as info:
        load_config(environ={variable: value})
    message = str(info.value)
    assert key.lower().replace("__", ".") in message and variable in message and expected in message


@pytest.mark.parametrize(
    ("text", "suffix", "expected"),
    [
        ("[model_routing\n", ".toml", "not valid TOML"),
        ("a: [1,\n", ".yaml", "not valid YAML"),
        ("- 1\n- 2\n", ".yml", "must hold a table"),
        ("[modelrouting]\nx = 1\n", ".toml", "unknown section 'modelrouting'"),
        ("model_routing = 3\n", ".toml", "must be a table"),
        ("x = 1\n", ".ini", "must end in .toml"),
    ],
)
def test_malformed_files_are_reported(tmp_path: Path, text, suffix, expected) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=expected):
        load_config(path, environ={})
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_config(tmp_path / "missing.toml", environ={})


def test_an_environment_variable_that_names_no_key_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="MAMBA_ROUTER__NOPE"):
        load_config(environ={"MAMBA_ROUTER__NOPE": "1"})


def test_config_show_prints_each_value_and_its_source(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(LEGACY_YAML, encoding="utf-8")
    monkeypatch.setenv("MAMBA_ROUTER__LOG__LOG_TEXT", "true")
    assert main(["config", "--show", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "mamba.real_model = /models/mamba-1.4b" in out and f"(file {path})" in out
    assert "log.log_text = True" in out and "(env MAMBA_ROUTER__LOG__LOG_TEXT)" in out
    assert "model_routing.long_context_tokens = 4096  (default)" in out
    assert main(["config", "--show", "--config", str(tmp_path / "nope.toml")]) == 2
    assert main(["config", "--config", str(path)]) == 0  # without --show: what differs from the defaults
    short = capsys.readouterr().out
    assert "log.log_text = True" in short and "mamba.real_model = /models/mamba-1.4b" in short
    assert "long_context_tokens" not in short and "other keys at their defaults; --show lists every key" in short


@given(
    word=st.sampled_from(["true", "false", "1", "0", "yes", "no", "on", "off"]),
    case=st.sampled_from([str.lower, str.upper, str.title]),
    left=st.sampled_from(["", " ", "\t"]),
    right=st.sampled_from(["", " ", "\n"]),
)
@settings(max_examples=60, deadline=None)
def test_every_switch_is_read_by_one_parser_for_info_and_the_router(word, case, left, right) -> None:
    """ENABLE_MAMBA=' false ' meant off for `mamba-router info` and was an error for the router (issue 14, item 9)."""
    from mamba_router.backends.selection import SelectionSettings

    value = left + case(word) + right
    expected = word in ("true", "1", "yes", "on")
    assert load_config(environ={"ENABLE_MAMBA": value}).config.model_routing.enable_mamba is expected
    assert SelectionSettings.from_env({"ENABLE_MAMBA": value}).enable_mamba is expected
    assert load_config(environ={}, overrides={"log.log_text": value}).config.log.log_text is expected


@pytest.mark.parametrize("path", ["", "   ", ".", ".."])
def test_a_log_path_that_names_no_file_is_a_configuration_error(path) -> None:
    """log.path = "" passed validation, then crashed on PosixPath('.') (issue 14, item 6)."""
    with pytest.raises(ConfigurationError, match="log.path"):
        load_config(environ={}, overrides={"log.path": path})


def test_a_directory_given_as_the_config_file_is_named_as_such(tmp_path: Path) -> None:
    """Issue 14, minor: it was reported as missing."""
    with pytest.raises(ConfigurationError, match="is a directory; give the path of the TOML or YAML file"):
        load_config(tmp_path)
    with pytest.raises(ConfigurationError, match="is a directory"):
        load_config(environ={"MAMBA_ROUTER_CONFIG": str(tmp_path)})


def test_max_new_tokens_beyond_what_a_request_may_ask_is_refused_by_the_config_naming_the_key() -> None:
    """Issue 14, minor: 500000 was accepted here and refused at generate time without naming the key."""
    from mamba_router.generation.requests import MAX_NEW_TOKENS_LIMIT

    env = {"MAMBA_ROUTER__GENERATION__MAX_NEW_TOKENS": "500000"}
    with pytest.raises(ConfigurationError, match=r"generation.max_new_tokens = '500000' \(from env MAMBA_ROUTER__GEN"):
        load_config(environ=env)
    assert load_config(overrides={"generation.max_new_tokens": MAX_NEW_TOKENS_LIMIT}, environ={}).config


def test_a_tilde_path_of_an_unknown_user_is_a_configuration_error() -> None:
    """Found by the fuzz suite: pathlib raised RuntimeError("Could not determine home directory")."""
    with pytest.raises(ConfigurationError, match="log.path '~no-such-user-7731/x' starts with a ~ that cannot be"):
        load_config(environ={"MAMBA_ROUTER__LOG__PATH": "~no-such-user-7731/x"})


def test_argv_that_is_not_utf8_is_printed_escaped_in_usage_errors(capsys) -> None:
    """Found by the fuzz suite: argparse's message about an undecodable argument crashed with UnicodeEncodeError."""
    import sys

    if hasattr(sys.stderr, "reconfigure"):
        sys.stderr.reconfigure(errors="strict")  # as PYTHONIOENCODING=utf-8 would leave it
    with pytest.raises(SystemExit) as exited:
        main(["route", "--query", "q", "\udcff"])
    assert exited.value.code == 2 and "\\udcff" in capsys.readouterr().err
