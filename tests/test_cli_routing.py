"""``mamba-router route``, ``generate`` and ``log`` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mamba_router.cli import main
from mamba_router.samples.synthetic import synthetic_judgment


@pytest.fixture()
def config_file(tmp_path: Path, llama_dir: Path) -> Path:
    path = tmp_path / "router.toml"
    path.write_text(
        f'[transformer]\nmodel = "{llama_dir}"\n\n[log]\npath = "{tmp_path / "log.jsonl"}"\n\n'
        '[model_routing]\ntruncation = "keep_end"\nenable_mamba = false\n',  # the same on CPU and GPU machines
        encoding="utf-8",
    )
    return path


def test_route_json_is_the_typed_record(tmp_path, config_file, capsys) -> None:
    judgment = tmp_path / "judgment.txt"
    judgment.write_text(synthetic_judgment(3, seed=1), encoding="utf-8")
    args = ["route", "--query", "What was decided?", "--context-file", str(judgment), "--config", str(config_file)]
    assert main([*args, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["model_used"] == "transformer" and record["backend"] == "transformer"
    assert record["fallback_used"] is True and "enable_mamba=false" in record["fallback_reason"]
    assert record["token_count"] > 0 and record["token_count_method"] == "tokenizer"
    assert [r["name"] for r in record["rules"]] == ["long_context", "multi_page", "legal_keywords"]
    assert all(set(r) >= {"name", "fired", "detail"} for r in record["rules"])
    assert record["rules"][1]["fired"] and record["pages"] == 3

    assert main(["route", "--query", "hello", "--pages", "1", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "transformer (transformer)" in out and "no model loaded" in out


def test_generate_then_log_reads_the_records_back(tmp_path, config_file, capsys) -> None:
    judgment = tmp_path / "judgment.txt"
    judgment.write_text(synthetic_judgment(2, seed=2), encoding="utf-8")
    args = ["generate", "--query", "Was the appeal allowed?", "--context-file", str(judgment)]
    assert main([*args, "--max-new-tokens", "4", "--json", "--config", str(config_file)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model_used"] == "transformer" and result["fallback_used"] is True
    assert result["truncation"]["mode"] == "keep_end"  # the tiny model's window is 256 tokens
    assert main(["generate", "--query", "hello", "--max-new-tokens", "3", "--config", str(config_file)]) == 0
    assert "answer" in capsys.readouterr().out

    assert main(["log", "--limit", "1", "--json", "--config", str(config_file)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["query_chars"] == len("hello")
    assert main(["log", "--limit", "5", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert out.count("generate ") == 2 and "fallback:" in out


def test_bad_cli_input_is_a_clear_error(tmp_path, config_file, capsys) -> None:
    assert (
        main(["route", "--query", "q", "--context-file", str(tmp_path / "nope.txt"), "--config", str(config_file)]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert main(["route", "--query", "q", "--context-file", str(binary), "--config", str(config_file)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert main(["route", "--query", "  ", "--config", str(config_file)]) == 2
    assert main(["log", "--limit", "-3", "--config", str(config_file)]) == 2
