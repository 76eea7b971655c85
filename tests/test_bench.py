"""The benchmark's own rules that the figures depend on."""
from bench.tools import tool_env


def test_mirror_is_timed_from_compiled_bytecode_whatever_the_shell_says(monkeypatch):
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    assert "PYTHONDONTWRITEBYTECODE" not in tool_env()
