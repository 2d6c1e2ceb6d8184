"""`python -m automation.github_comment --pr N --report preview.md`: one preview comment per pull request.

Speaks GitHub's REST API (base URL from GITHUB_API_URL, as GitHub Actions sets it; repository from
GITHUB_REPOSITORY or --repo; token from GITHUB_TOKEN): lists the pull request's comments page by
page, finds the one carrying the report's hidden marker and edits it in place, or creates it.
Comments duplicated by an earlier race are deleted, so the pull request keeps exactly one.
Exit status: 0 done, 1 GitHub refused (the status and GitHub's message are printed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from automation.preview_report import MARKER

GITHUB_LIMIT = 65_536
DEFAULT_API = "https://api.github.com"
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


class GitHubError(RuntimeError):
    """GitHub answered with an error status (after retries for 5xx)."""


@dataclass
class GitHub:
    api_url: str
    token: str
    retries: int = 3

    def request(self, method: str, url: str, body: dict | None = None) -> tuple[object, dict[str, str]]:
        """One API call; `url` is a path below the base URL or an absolute URL (pagination)."""
        if not url.startswith(("http://", "https://")):
            url = self.api_url.rstrip("/") + url
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(1, self.retries + 1):
            req = urllib.request.Request(url, data=data, method=method)
            req.add_header("Authorization", f"Bearer {self.token}")
            req.add_header("Accept", "application/vnd.github+json")
            req.add_header("X-GitHub-Api-Version", "2022-11-28")
            req.add_header("User-Agent", "iotistic-preview")
            if data is not None:
                req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    raw = resp.read()
                    return (json.loads(raw) if raw else None), dict(resp.headers)
            except urllib.error.HTTPError as e:
                if e.code >= 500 and attempt < self.retries:
                    time.sleep(0.5 * 2**attempt)
                    continue
                raise GitHubError(f"{method} {url}: HTTP {e.code} {_message(e)}") from None
            except urllib.error.URLError as e:
                if attempt < self.retries:
                    time.sleep(0.5 * 2**attempt)
                    continue
                raise GitHubError(f"{method} {url}: {e.reason}") from None
        raise AssertionError("unreachable")

    def comments(self, repo: str, pr: int) -> list[dict]:
        """Every comment of the pull request (its issue comments), following `Link: rel="next"`."""
        found: list[dict] = []
        url: str | None = f"/repos/{repo}/issues/{pr}/comments?per_page=100"
        while url:
            page, headers = self.request("GET", url)
            found += page if isinstance(page, list) else []
            match = _NEXT.search(headers.get("Link", "") or headers.get("link", ""))
            url = match.group(1) if match else None
        return found


def _message(e: urllib.error.HTTPError) -> str:
    """GitHub's own explanation from the error body (`message` and any `errors[].message`)."""
    try:
        body = json.loads(e.read() or b"{}")
    except ValueError:
        return e.reason or ""
    details = [err.get("message", "") for err in body.get("errors", []) if isinstance(err, dict)]
    return "; ".join(m for m in [body.get("message", ""), *details] if m)


def comment_body(report: str) -> str:
    """The report with the marker first, within GitHub's size limit."""
    body = report if report.startswith(MARKER) else f"{MARKER}\n{report}"
    if len(body) > GITHUB_LIMIT:
        note = "\n\n… cut at GitHub's comment limit.\n"
        body = body[: GITHUB_LIMIT - len(note)] + note
    return body


def post(github: GitHub, repo: str, pr: int, report: str) -> tuple[str, dict]:
    """Create or edit the one preview comment; returns ("created" | "updated", the comment)."""
    body = comment_body(report)
    marked = [c for c in github.comments(repo, pr) if MARKER in (c.get("body") or "")]
    for duplicate in marked[1:]:
        github.request("DELETE", f"/repos/{repo}/issues/comments/{duplicate['id']}")
    if marked:
        comment, _ = github.request(
            "PATCH", f"/repos/{repo}/issues/comments/{marked[0]['id']}", {"body": body}
        )
        return "updated", comment  # type: ignore[return-value]
    comment, _ = github.request("POST", f"/repos/{repo}/issues/{pr}/comments", {"body": body})
    return "created", comment  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m automation.github_comment", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--pr", type=int, required=True, help="pull request number")
    parser.add_argument("--report", type=Path, required=True, help="the preview command's markdown report")
    parser.add_argument("--repo", default=os.environ.get("GITHUB_REPOSITORY"), help="owner/name")
    args = parser.parse_args(argv)
    token = os.environ.get("GITHUB_TOKEN")
    problems = []
    if not token:
        problems.append("GITHUB_TOKEN is not set")
    if not args.repo or not re.fullmatch(r"[\w.-]+/[\w.-]+", args.repo):
        problems.append(f"the repository must be owner/name (--repo or GITHUB_REPOSITORY), not {args.repo!r}")
    if not args.report.is_file():
        problems.append(f"no report at {args.report}")
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 2
    github = GitHub(os.environ.get("GITHUB_API_URL") or DEFAULT_API, token or "")
    try:
        what, comment = post(github, args.repo, args.pr, args.report.read_text())
    except GitHubError as e:
        print(f"error: GitHub refused the preview comment: {e}", file=sys.stderr)
        return 1
    print(f"{what} comment {comment.get('id')} on {args.repo}#{args.pr}: {comment.get('html_url', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
