"""Dockerfiles as the image builder reads them: every rule without building anything."""

from __future__ import annotations

import pytest

from devenv import dockerfile as df


def test_instructions_join_continuations_and_skip_comments():
    text = "# a comment\nFROM debian:bookworm-slim\n\nRUN a \\\n  # inside\n  && b\nENV A=1 \\\n    B=2\n"
    ins = df.parse(text)
    assert [(i.keyword, i.args, i.line) for i in ins] == [
        ("FROM", "debian:bookworm-slim", 2),
        ("RUN", "a && b", 4),
        ("ENV", "A=1 B=2", 7),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM x\nADD https://example.invalid/a /a\n", "Dockerfile:2: ADD is not supported"),
        ("FROM a AS b\nFROM c\n", "exactly one FROM"),
        ("RUN true\n", "the first instruction must be FROM"),
        ("FROM x\nRUN a \\\n", "ends with a line continuation"),
    ],
)
def test_what_the_builder_cannot_do_is_an_error_naming_the_line(text, message):
    with pytest.raises(df.DockerfileError, match=message):
        df.parse(text)


def test_env_forms_and_substitution():
    assert df.key_values("A=1 B='two words' C=$A", {"A": "1"}) == [("A", "1"), ("B", "two words"), ("C", "1")]
    assert df.key_values("PATH /x:${PATH}", {"PATH": "/usr/bin"}) == [("PATH", "/x:/usr/bin")]


def test_command_forms():
    assert df.command_form('["python", "-m", "app"]') == ["python", "-m", "app"]
    assert df.command_form("echo hi && true") == ["/bin/sh", "-c", "echo hi && true"]
    with pytest.raises(df.DockerfileError):
        df.command_form('["python", 1]')


def test_copy_stays_inside_its_context():
    assert df.parse_copy("--chown=1:2 a b /dest/", {}) == df.Copy(("a", "b"), "/dest/", "1:2")
    for bad in ("../secret /x", "/etc/passwd /x"):
        with pytest.raises(df.DockerfileError, match="outside the build context"):
            df.parse_copy(bad, {})
    with pytest.raises(df.DockerfileError, match="--from"):
        df.parse_copy("--from=builder /a /b", {})


def test_exposed_ports_default_to_tcp():
    assert df.exposed_ports("80 53/udp") == ["80/tcp", "53/udp"]
