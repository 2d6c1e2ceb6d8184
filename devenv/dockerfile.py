"""Dockerfiles as data: the instructions our image builder (devenv/images.py) carries out.

Plain parsing, no side effects, so every rule is tested without building anything. The subset is
FROM, RUN, COPY, ENV, ARG, WORKDIR, USER, EXPOSE, CMD, ENTRYPOINT, LABEL, STOPSIGNAL. Anything else
(ADD, SHELL, ONBUILD, ...) is a DockerfileError naming the file and line, never silently skipped.

Multi-stage files split into stages (`stages`); the builder builds the last one, and takes each
earlier stage a `COPY --from=<stage>` reads from a folder the catalog names (see devenv/images.py).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

SUPPORTED = (
    "FROM",
    "RUN",
    "COPY",
    "ENV",
    "ARG",
    "WORKDIR",
    "USER",
    "EXPOSE",
    "CMD",
    "ENTRYPOINT",
    "LABEL",
    "STOPSIGNAL",
)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DockerfileError(ValueError):
    """A Dockerfile our builder cannot carry out; the message names the file and line."""


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword, its argument text (continuations joined) and its line."""

    keyword: str
    args: str
    line: int


def parse(text: str, path: str = "Dockerfile") -> list[Instruction]:
    """Instructions in order; comments and blank lines dropped, `\\` continuations joined."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are skipped, as docker does
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        joined = " ".join(p for p in pending if p)
        pending = []
        keyword, _, args = joined.partition(" ")
        keyword = keyword.upper()
        if keyword not in SUPPORTED:
            raise DockerfileError(
                f"{path}:{start}: {keyword} is not supported by the image builder "
                f"(supported: {', '.join(SUPPORTED)})"
            )
        instructions.append(Instruction(keyword, args.strip(), start))
    if pending:
        raise DockerfileError(f"{path}:{start}: the last instruction ends with a line continuation")
    if not instructions or instructions[0].keyword not in ("FROM", "ARG"):
        raise DockerfileError(f"{path}: the first instruction must be FROM")
    if not any(i.keyword == "FROM" for i in instructions):
        raise DockerfileError(f"{path}: there is no FROM")
    return instructions


@dataclass(frozen=True)
class Stage:
    """One build stage: `FROM base [AS name]` and the instructions up to the next FROM."""

    base: str
    name: str  # "" for an unnamed stage
    line: int
    instructions: tuple[Instruction, ...]


_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")


def parse_from(args: str, path: str, line: int) -> tuple[str, str]:
    """`FROM image [AS name]` -> (image, name); flags such as --platform are refused."""
    words = args.split()
    if words and words[0].startswith("--"):
        raise DockerfileError(f"{path}:{line}: FROM {words[0].split('=')[0]} is not supported")
    if len(words) == 1:
        return words[0], ""
    if len(words) == 3 and words[1].upper() == "AS" and _STAGE_NAME.match(words[2].lower()):
        return words[0], words[2].lower()
    raise DockerfileError(f"{path}:{line}: expected `FROM image` or `FROM image AS name`, got `FROM {args}`")


def stages(
    instructions: list[Instruction], path: str = "Dockerfile"
) -> tuple[list[Instruction], list[Stage]]:
    """The global ARGs before the first FROM, and the stages in order (the last is the image)."""
    leading: list[Instruction] = []
    found: list[Stage] = []
    current: list[Instruction] = []
    head: Instruction | None = None
    for ins in instructions:
        if ins.keyword == "FROM":
            if head is not None:
                found.append(_stage(head, current, path))
            head, current = ins, []
        elif head is None:
            leading.append(ins)  # only ARG can come first (parse checks it)
        else:
            current.append(ins)
    assert head is not None, "parse() guarantees a FROM"
    found.append(_stage(head, current, path))
    names = [s.name for s in found if s.name]
    for name in names:
        if names.count(name) > 1:
            raise DockerfileError(f"{path}: two stages are named {name!r}")
    return leading, found


def _stage(head: Instruction, body: list[Instruction], path: str) -> Stage:
    base, name = parse_from(head.args, path, head.line)
    return Stage(base, name, head.line, tuple(body))


_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def substitute(value: str, variables: dict[str, str]) -> str:
    """Docker's `$VAR` / `${VAR}` substitution (unset variables become empty)."""
    return _VAR.sub(lambda m: variables.get(m.group("braced") or m.group("plain"), ""), value)


def command_form(args: str) -> list[str]:
    """CMD/ENTRYPOINT/RUN arguments: the JSON (exec) form, or the shell form run by /bin/sh -c."""
    if args.startswith("["):
        try:
            value = json.loads(args)
        except ValueError as e:
            raise DockerfileError(f"not a JSON array: {args}") from e
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DockerfileError(f"not a JSON array of strings: {args}")
        return value
    return ["/bin/sh", "-c", args]


def key_values(args: str, variables: dict[str, str]) -> list[tuple[str, str]]:
    """ENV/LABEL/ARG pairs: `K=V K2="v 2"` (values substituted), or the legacy `K value`."""
    first = args.split(None, 1)[0] if args else ""
    if "=" not in first:
        key, _, value = args.partition(" ")
        return [(key, substitute(value.strip(), variables))]
    pairs = []
    for token in shlex.split(args, posix=True):
        key, sep, value = token.partition("=")
        if not sep:
            raise DockerfileError(f"expected KEY=VALUE, got {token!r}")
        pairs.append((key, substitute(value, variables)))
    return pairs


@dataclass
class ImageConfig:
    """What a Dockerfile sets in the image's config (not its files)."""

    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = "/"
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    exposed: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    stopsignal: str = ""

    def as_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


@dataclass(frozen=True)
class Copy:
    """A COPY: sources (in the build context, or absolute paths of an earlier stage), a destination."""

    sources: tuple[str, ...]
    dest: str
    chown: str = ""
    stage: str = ""  # --from=<stage>: the sources are that stage's files


def parse_copy(args: str, variables: dict[str, str]) -> Copy:
    """COPY [--chown=u:g] [--from=stage] src... dest (the JSON form too); other flags are refused."""
    parts = command_form(args) if args.startswith("[") else shlex.split(args)
    chown = stage = ""
    while parts and parts[0].startswith("--"):
        flag = parts.pop(0)
        if flag.startswith("--chown="):
            chown = flag.split("=", 1)[1]
        elif flag.startswith("--from="):
            stage = flag.split("=", 1)[1].lower()
        else:
            raise DockerfileError(f"COPY {flag.split('=')[0]} is not supported (only --chown and --from)")
    if len(parts) < 2:
        raise DockerfileError("COPY needs at least one source and a destination")
    *sources, dest = [substitute(p, variables) for p in parts]
    for src in sources:
        if ".." in src.split("/"):
            raise DockerfileError(f"COPY source {src!r} leaves its {'stage' if stage else 'build context'}")
        if src.startswith("/") and not stage:
            raise DockerfileError(f"COPY source {src!r} is outside the build context")
    if stage:
        # A stage's files are named from its root, as docker does with relative ones too.
        sources = ["/" + src.lstrip("/") for src in sources]
    return Copy(tuple(sources), dest, chown, stage)


def exposed_ports(args: str) -> list[str]:
    """EXPOSE 80 53/udp -> ['80/tcp', '53/udp']."""
    return [p if "/" in p else f"{p}/tcp" for p in args.split()]
