"""The preview comment poster against a local HTTP server that behaves like GitHub's REST API.

The server keeps issue comments in memory and answers as GitHub does: bearer-token auth (401 with
"Bad credentials"), 404 for an unknown repository, pages of `per_page` comments with a
`Link: <...>; rel="next"` header, 422 for a body over 65,536 characters, ids and html_urls on
created comments. The poster runs as CI runs it: `python -m automation.github_comment`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from automation.preview_report import MARKER

ROOT = Path(__file__).resolve().parent.parent.parent
TOKEN = "ghs_test-token"
REPO = "iotistic/platform"


@dataclass
class FakeGitHub:
    """In-memory issue comments of one repository, and a log of the requests made."""

    comments: dict[int, list[dict]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 1000
    fail_next: int = 0  # answer this many requests with 502 first
    url: str = ""

    def add(self, pr: int, body: str, user: str = "someone") -> dict:
        self.next_id += 1
        comment = {
            "id": self.next_id,
            "body": body,
            "user": {"login": user},
            "html_url": f"https://github.example/{REPO}/pull/{pr}#issuecomment-{self.next_id}",
        }
        self.comments.setdefault(pr, []).append(comment)
        return comment

    def find(self, comment_id: int) -> tuple[int, dict] | None:
        for pr, comments in self.comments.items():
            for c in comments:
                if c["id"] == comment_id:
                    return pr, c
        return None


def handler_for(gh: FakeGitHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def reply(self, status: int, body: object = None, headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def handle_any(self, method: str) -> None:
            url = urlparse(self.path)
            gh.requests.append((method, url.path))
            if gh.fail_next:
                gh.fail_next -= 1
                return self.reply(502, {"message": "Server Error"})
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self.reply(401, {"message": "Bad credentials"})
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length)) if length else {}
            parts = url.path.strip("/").split("/")
            if parts[:3] != ["repos", *REPO.split("/")]:
                return self.reply(404, {"message": "Not Found"})
            rest = parts[3:]
            if "body" in payload and len(payload["body"]) > 65536:
                return self.reply(
                    422,
                    {
                        "message": "Validation Failed",
                        "errors": [{"message": "body is too long (maximum is 65536 characters)"}],
                    },
                )
            if method == "GET" and rest[:1] == ["issues"] and rest[2:] == ["comments"]:
                query = parse_qs(url.query)
                per_page = int(query.get("per_page", ["30"])[0])
                page = int(query.get("page", ["1"])[0])
                comments = gh.comments.get(int(rest[1]), [])
                chunk = comments[(page - 1) * per_page : page * per_page]
                headers = {}
                if page * per_page < len(comments):
                    nxt = f"{gh.url}{url.path}?per_page={per_page}&page={page + 1}"
                    headers["Link"] = f'<{nxt}>; rel="next", <{gh.url}{url.path}?page=99>; rel="last"'
                return self.reply(200, chunk, headers)
            if method == "POST" and rest[:1] == ["issues"] and rest[2:] == ["comments"]:
                return self.reply(201, gh.add(int(rest[1]), payload["body"], user="github-actions[bot]"))
            if rest[:2] == ["issues", "comments"] and len(rest) == 3:
                found = gh.find(int(rest[2]))
                if found is None:
                    return self.reply(404, {"message": "Not Found"})
                pr, comment = found
                if method == "PATCH":
                    comment["body"] = payload["body"]
                    return self.reply(200, comment)
                if method == "DELETE":
                    gh.comments[pr].remove(comment)
                    return self.reply(204)
            return self.reply(404, {"message": "Not Found"})

        def do_GET(self):
            self.handle_any("GET")

        def do_POST(self):
            self.handle_any("POST")

        def do_PATCH(self):
            self.handle_any("PATCH")

        def do_DELETE(self):
            self.handle_any("DELETE")

    return Handler


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    gh = FakeGitHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(gh))
    gh.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield gh
    server.shutdown()
    server.server_close()


def post(github: FakeGitHub, tmp_path: Path, report: str, pr: int = 7, token: str = TOKEN, *extra: str):
    path = tmp_path / "preview.md"
    path.write_text(report)
    env = {**os.environ, "GITHUB_API_URL": github.url, "GITHUB_TOKEN": token, "GITHUB_REPOSITORY": REPO}
    return subprocess.run(
        [sys.executable, "-m", "automation.github_comment", "--pr", str(pr), "--report", str(path), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def report(text: str) -> str:
    return f"{MARKER}\n## Iotistic preview against `main`\n\n{text}\n"


def test_the_first_run_creates_the_comment_and_later_runs_edit_it_in_place(github, tmp_path):
    github.add(7, "LGTM, but let's see the preview")
    first = post(github, tmp_path, report("**No changes**"))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"created comment 1002 on {REPO}#7: https://github.example/")
    for text in ("✅ Previews succeeded.", "❌ **This change must not be merged as it is.**"):
        again = post(github, tmp_path, report(text))
        assert again.returncode == 0, again.stderr
        assert again.stdout.startswith(f"updated comment 1002 on {REPO}#7")
    bodies = [c["body"] for c in github.comments[7]]
    assert bodies == [
        "LGTM, but let's see the preview",
        report("❌ **This change must not be merged as it is.**"),
    ]
    assert ("POST", f"/repos/{REPO}/issues/7/comments") in github.requests
    assert sum(1 for m, _ in github.requests if m == "POST") == 1


def test_the_marked_comment_is_found_on_a_later_page(github, tmp_path):
    for i in range(150):
        github.add(7, f"comment {i}")
    marked = github.add(7, report("old"))
    for i in range(60):
        github.add(7, f"later {i}")
    proc = post(github, tmp_path, report("new"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"updated comment {marked['id']}")
    assert marked["body"] == report("new") and len(github.comments[7]) == 211
    pages = [path for method, path in github.requests if method == "GET"]
    assert len(pages) == 3  # 100 + 100 + 11 comments


def test_duplicates_left_by_a_race_are_removed(github, tmp_path):
    keep, duplicate = github.add(7, report("run 1")), github.add(7, report("run 2"))
    proc = post(github, tmp_path, report("run 3"))
    assert proc.returncode == 0, proc.stderr
    assert [c["id"] for c in github.comments[7]] == [keep["id"]] and keep["body"] == report("run 3")
    assert ("DELETE", f"/repos/{REPO}/issues/comments/{duplicate['id']}") in github.requests


def test_a_report_without_the_marker_gets_it_so_the_next_run_finds_it(github, tmp_path):
    assert post(github, tmp_path, "plain text").returncode == 0
    assert github.comments[7][0]["body"] == f"{MARKER}\nplain text"
    assert post(github, tmp_path, "plain text, again").stdout.startswith("updated")


def test_an_oversized_report_is_cut_to_githubs_limit(github, tmp_path):
    proc = post(github, tmp_path, report("x" * 70_000))
    assert proc.returncode == 0, proc.stderr
    body = github.comments[7][0]["body"]
    assert len(body) <= 65_536 and body.endswith("… cut at GitHub's comment limit.\n")


def test_server_errors_are_retried(github, tmp_path):
    github.fail_next = 2
    proc = post(github, tmp_path, report("after retries"))
    assert proc.returncode == 0, proc.stderr
    assert github.comments[7][0]["body"] == report("after retries")


def test_github_refusals_name_the_status_and_githubs_message(github, tmp_path):
    bad_token = post(github, tmp_path, report("x"), 7, "wrong")
    assert bad_token.returncode == 1
    assert "HTTP 401 Bad credentials" in bad_token.stderr and "Traceback" not in bad_token.stderr
    other_repo = post(github, tmp_path, report("x"), 7, TOKEN, "--repo", "someone/else")
    assert other_repo.returncode == 1 and "HTTP 404 Not Found" in other_repo.stderr
    assert github.comments == {}


def test_missing_settings_are_usage_errors(github, tmp_path):
    proc = post(github, tmp_path, report("x"), 7, "")
    assert proc.returncode == 2 and "GITHUB_TOKEN is not set" in proc.stderr
    proc = post(github, tmp_path, report("x"), 7, TOKEN, "--repo", "not a repo")
    assert proc.returncode == 2 and "must be owner/name" in proc.stderr
