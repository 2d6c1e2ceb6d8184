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
        ("ARG A=1\n", "there is no FROM"),
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
        with pytest.raises(df.DockerfileError, match="(outside|leaves) (the|its) build context"):
            df.parse_copy(bad, {})
    with pytest.raises(df.DockerfileError, match="--link"):
        df.parse_copy("--link a /b", {})


def test_copy_from_a_stage_names_the_stage_and_its_absolute_paths():
    copy = df.parse_copy("--from=Engine /opt/bin/a opt/bin/b /dest/", {})
    assert copy == df.Copy(("/opt/bin/a", "/opt/bin/b"), "/dest/", "", "engine")
    with pytest.raises(df.DockerfileError, match="leaves its stage"):
        df.parse_copy("--from=engine /opt/../etc/shadow /x", {})


def test_a_multi_stage_file_splits_into_global_args_and_named_stages():
    text = (
        "ARG GO=1.26\nFROM golang:${GO} AS engine\nRUN make\n"
        "FROM python:3.11-slim\nCOPY --from=engine /o /o\n"
    )
    leading, stages = df.stages(df.parse(text))
    assert [i.keyword for i in leading] == ["ARG"]
    assert [(s.base, s.name, s.line, len(s.instructions)) for s in stages] == [
        ("golang:${GO}", "engine", 2, 1),
        ("python:3.11-slim", "", 4, 1),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM a AS b\nFROM c AS b\n", "two stages are named 'b'"),
        ("FROM --platform=linux/arm64 a\n", "Dockerfile:1: FROM --platform is not supported"),
        ("FROM a b c\n", "Dockerfile:1: expected `FROM image` or `FROM image AS name`"),
    ],
)
def test_stages_the_builder_cannot_read_are_errors_naming_the_line(text, message):
    with pytest.raises(df.DockerfileError, match=message):
        df.stages(df.parse(text))


def test_exposed_ports_default_to_tcp():
    assert df.exposed_ports("80 53/udp") == ["80/tcp", "53/udp"]
