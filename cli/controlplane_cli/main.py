"""``controlplane``: deploy and operate apps on a controlplane installation from CI or a shell.

Configured by CONTROLPLANE_URL and CONTROLPLANE_TOKEN (or --url/--token). In GitHub Actions with
``id-token: write``, or with CONTROLPLANE_OIDC_TOKEN set (GitLab CI ``id_tokens``), no token is
needed: the CI's OIDC token is exchanged for a short-lived one scoped to --app.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import importlib
import json
import os
import re
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, archive, exits, gitinfo
from .exits import CliError
from .follow import JsonRenderer, Renderer, TerminalRenderer, follow, interrupted, result

if TYPE_CHECKING:
    from .api import Api

# The HTTP client (httpx) is most of the command's start-up time: ``deploy`` imports it on a
# thread while it zips the directory and reads git, the other commands when they connect.
HTTP_MODULES = ("controlplane_cli.api", "controlplane_cli.oidc")


def load_http(tls: bool = False) -> None:
    for name in HTTP_MODULES:
        importlib.import_module(name)
    if tls:
        sys.modules["controlplane_cli.api"].tls_context()


DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """Seconds in ``15m``, ``90s``, ``1h30m`` or ``300``. Raises argparse.ArgumentTypeError."""
    match = DURATION.match(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 15m, 90s, 1h)")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own exit code is 2 too, but with a usage dump
        self.print_usage(sys.stderr)
        raise CliError(exits.USAGE, message)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None, help="the control plane's URL (CONTROLPLANE_URL)")
    common.add_argument(
        "--token", default=None, help="an API token (CONTROLPLANE_TOKEN); avoid: it shows in ps"
    )
    common.add_argument("--team", default=None, help="the team, when two of yours have an app of that name")
    common.add_argument("--app", default=None, help="the app's slug (CONTROLPLANE_APP)")
    common.add_argument("--json", action="store_true", help="print JSON for machines")
    common.add_argument(
        "--verbose", "-v", action="store_true", help="print each request and its time on stderr"
    )

    parser = Parser(
        prog="controlplane",
        description=__doc__.split("\n\n")[0],
        epilog=exits.TABLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"controlplane {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def waiting(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--wait", dest="wait", action="store_true", default=True, help="follow to the end (default)"
        )
        p.add_argument("--no-wait", dest="wait", action="store_false", help="start it and exit")
        p.add_argument(
            "--timeout",
            type=parse_duration,
            default=parse_duration("15m"),
            help="stop waiting after this long (exit 4; the deployment goes on). Default 15m",
        )
        p.add_argument("--follow", action="store_true", help="with --json: a JSON line per log line")
        p.add_argument(
            "--cancel-on-interrupt",
            action="store_true",
            help="Ctrl-C cancels the deployment (default: it goes on)",
        )

    p = sub.add_parser("deploy", parents=[common], help="zip, upload, deploy and follow")
    p.add_argument(
        "path", nargs="?", default=".", help="a directory (zipped, minus .controlplaneignore) or a .zip"
    )
    p.add_argument("--stage", required=True)
    p.add_argument("--message", default=None, help="the commit message to record")
    p.add_argument("--sha", default=None, help="the commit to record (default: the working tree's HEAD)")
    p.add_argument("--branch", default=None)
    p.add_argument("--force", action="store_true", help="deploy even when the stage is pinned")
    waiting(p)

    p = sub.add_parser("status", parents=[common], help="an app's stages and regions, or one deployment")
    p.add_argument("deployment", nargs="?", type=int)
    p.add_argument("--stage", default=None)

    p = sub.add_parser("logs", parents=[common], help="a deployment's log")
    p.add_argument("deployment", type=int)
    p.add_argument("--follow", "-f", action="store_true", help="follow until it finishes")
    p.add_argument("--timeout", type=parse_duration, default=None)
    p.add_argument("--cancel-on-interrupt", action="store_true")

    p = sub.add_parser("rollback", parents=[common], help="move a stage back to an earlier release")
    p.add_argument("--stage", required=True)
    p.add_argument(
        "--to", default=None, help="release:ID, deployment:ID or an id (default: the previous release)"
    )
    p.add_argument("--regions", default=None, help="comma-separated region codes (default: all)")
    waiting(p)

    p = sub.add_parser("promote", parents=[common], help="ship one stage's release to another stage")
    p.add_argument("--from", dest="from_stage", required=True)
    p.add_argument("--to", dest="to_stage", required=True)
    p.add_argument("--force", action="store_true")
    waiting(p)

    p = sub.add_parser("cancel", parents=[common], help="cancel a deployment's regions that have not started")
    p.add_argument("deployment", type=int)

    p = sub.add_parser("releases", parents=[common], help="an app's releases and where each is live")
    p.add_argument("--stage", default=None)

    p = sub.add_parser("diff", parents=[common], help="what changed between two releases")
    p.add_argument("a", type=int, help="release id")
    p.add_argument("b", type=int, help="the release id to compare against")

    p = sub.add_parser("env", parents=[common], help="list, set or unset env vars")
    p.add_argument("action", choices=["list", "set", "unset"])
    p.add_argument("assignment", nargs="?", help="KEY=VALUE (set), KEY (unset, or set --secret from stdin)")
    p.add_argument("--secret", action="store_true", help="a secret: without =VALUE it is read from stdin")
    p.add_argument("--stage", default=None)
    p.add_argument("--region", default=None)
    return parser


# --- Configuration ----------------------------------------------------------------------------


def connect(args: argparse.Namespace, env: dict[str, str], *, need_app: bool = False) -> Api:
    load_http()
    api_mod, oidc = sys.modules["controlplane_cli.api"], sys.modules["controlplane_cli.oidc"]
    url = args.url or env.get("CONTROLPLANE_URL", "")
    if not url:
        raise CliError(exits.USAGE, "no control plane URL: set CONTROLPLANE_URL or pass --url")
    if not url.startswith(("http://", "https://")):
        raise CliError(exits.USAGE, f"CONTROLPLANE_URL must start with https:// (got {url!r})")
    args.app = args.app or env.get("CONTROLPLANE_APP", "")
    team = args.team or env.get("CONTROLPLANE_TEAM", "")
    if need_app and not args.app:
        raise CliError(exits.USAGE, "which app? pass --app or set CONTROLPLANE_APP")
    token = args.token or env.get("CONTROLPLANE_TOKEN", "")
    if not token:
        audience = env.get("CONTROLPLANE_OIDC_AUDIENCE") or url.rstrip("/")
        id_token = oidc.ci_id_token(env, audience)
        if not id_token:
            raise CliError(
                exits.USAGE, "no token: set CONTROLPLANE_TOKEN (or run in CI with OIDC, see --help)"
            )
        if not args.app:
            raise CliError(
                exits.USAGE, "the OIDC login is scoped to one app: pass --app or set CONTROLPLANE_APP"
            )
        token = api_mod.exchange_oidc(url, id_token=id_token, app=args.app, team=team)["token"]
    return api_mod.Api(url, token, team=team, verbose=args.verbose)


def renderer_for(args: argparse.Namespace) -> Renderer:
    if args.json:
        return JsonRenderer(lines=bool(getattr(args, "follow", False)))
    if sys.stdout.isatty() and os.environ.get("TERM") != "dumb":
        return TerminalRenderer()
    return Renderer()


def follow_to_end(api: Api, deployment: dict, args: argparse.Namespace) -> int:
    renderer = renderer_for(args)
    if not args.wait:
        if args.json:
            print(json.dumps(result(deployment, api.base_url)))
        else:
            link = f"{api.base_url}/deployments/{deployment['id']}/"
            print(f"deployment {deployment['id']} {deployment['status']}: {link}")
        return exits.SUCCEEDED
    try:
        renderer.start(deployment, api.base_url)
        final = follow(
            api,
            deployment["id"],
            renderer,
            timeout=args.timeout,
            cancel_on_interrupt=args.cancel_on_interrupt,
        )
    except KeyboardInterrupt:  # (follow turns one into CliError itself; this covers the line before)
        raise interrupted(api, deployment["id"], cancel=args.cancel_on_interrupt)
    renderer.finish(final, api.base_url)
    return exits.for_deployment(final)


# --- Commands ---------------------------------------------------------------------------------


def cmd_deploy(args, env) -> int:
    url = args.url or env.get("CONTROLPLANE_URL", "")
    loader = threading.Thread(target=load_http, args=(url.startswith("https://"),), daemon=True)
    loader.start()
    data, name = archive.load(args.path)  # bad paths fail before any request
    commit = gitinfo.commit_facts(Path(args.path), env)
    loader.join()
    api = connect(args, env, need_app=True)
    for key in ("sha", "message", "branch"):
        if getattr(args, key):
            commit[key] = getattr(args, key)
    if commit.get("sha") and not re.fullmatch(r"[0-9a-fA-F]{7,64}", commit["sha"]):
        raise CliError(exits.USAGE, f"--sha: not a git sha: {commit['sha']!r}")
    sha256 = hashlib.sha256(data).hexdigest()
    artifact = api.post(
        f"/apps/{args.app}/artifacts/",
        files={"file": (name, data, "application/zip")},
        data={"sha256": sha256},
    )
    body = {"stage": args.stage, "artifact": artifact["id"], "force": args.force}
    if commit:
        body["commit"] = {k: v[:10000] if k == "message" else v for k, v in commit.items()}
    # The key makes a retry after a dropped connection return the first answer, not a second deploy.
    deployment = api.request(
        "POST", f"/apps/{args.app}/deployments/", json=body,
        headers={"Idempotency-Key": f"cli-{os.urandom(16).hex()}"}, retry=True,
    )  # fmt: skip
    return follow_to_end(api, deployment, args)


def cmd_status(args, env) -> int:
    api = connect(args, env, need_app=args.deployment is None)
    if args.deployment is not None:
        deployment = api.get(f"/deployments/{args.deployment}/")
        if args.json:
            print(json.dumps(result(deployment, api.base_url)))
        else:
            Renderer().finish(deployment, api.base_url)
        return exits.for_deployment(deployment)
    app = api.get(f"/apps/{args.app}/")
    if args.json:
        print(json.dumps(app))
        return exits.SUCCEEDED
    print(f"{app['slug']} ({app.get('runtime', '')})")
    for stage in app.get("stages", []):
        if args.stage and stage["name"] != args.stage:
            continue
        pinned = f" pinned: {stage.get('pinned_reason') or 'after a rollback'}" if stage.get("pinned") else ""
        print(f"  {stage['name']}{pinned}")
        for region in app.get("regions", []):
            here = (region.get("stages") or {}).get(stage["name"]) or {}
            version = f"v{here['version']}" if here.get("version") else "not deployed"
            print(f"    {region['region']:<16} {version:<14} {here.get('health') or ''}")
    return exits.SUCCEEDED


def cmd_logs(args, env) -> int:
    api = connect(args, env)
    if args.follow:
        args.wait = True
        renderer = JsonRenderer(lines=True) if args.json else Renderer()
        final = follow(api, args.deployment, renderer, timeout=args.timeout,
                       cancel_on_interrupt=args.cancel_on_interrupt)  # fmt: skip
        renderer.finish(final, api.base_url)
        return exits.for_deployment(final)
    after = 0
    plain = Renderer()
    while True:
        page = api.get(f"/deployments/{args.deployment}/events/", params={"after": after, "limit": 1000})
        for event in page["results"]:
            if args.json:
                print(json.dumps(event))
            else:
                plain.event(event)
        after = page["last_seq"]
        if len(page["results"]) < 1000:
            return exits.SUCCEEDED


def cmd_rollback(args, env) -> int:
    api = connect(args, env, need_app=True)
    body: dict = {"stage": args.stage}
    if args.to:
        body["to"] = args.to
    if args.regions:
        body["regions"] = [r.strip() for r in args.regions.split(",") if r.strip()]
    return follow_to_end(api, api.post(f"/apps/{args.app}/rollback/", json=body), args)


def cmd_promote(args, env) -> int:
    api = connect(args, env, need_app=True)
    body = {"from_stage": args.from_stage, "to_stage": args.to_stage, "force": args.force}
    return follow_to_end(api, api.post(f"/apps/{args.app}/promote/", json=body), args)


def cmd_cancel(args, env) -> int:
    api = connect(args, env)
    deployment = api.post(f"/deployments/{args.deployment}/cancel/")
    print(json.dumps(result(deployment, api.base_url)) if args.json else
          f"deployment {deployment['id']}: cancel requested ({deployment['status']})")  # fmt: skip
    return exits.SUCCEEDED


def cmd_releases(args, env) -> int:
    api = connect(args, env, need_app=True)
    params = {"stage": args.stage} if args.stage else {}
    releases = api.pages(f"/apps/{args.app}/releases/", params)
    if args.json:
        print(json.dumps(releases))
        return exits.SUCCEEDED
    for r in releases:
        live = r.get("live_in") or r.get("regions") or []
        live_text = ",".join(x if isinstance(x, str) else x.get("region", "") for x in live)
        sha = (
            (r.get("commit") or {}).get("sha", "")
            if isinstance(r.get("commit"), dict)
            else r.get("commit_sha", "")
        )
        print(f"{r['id']:>6}  {r.get('stage', ''):<12} #{r.get('number', ''):<5} {sha[:7]:<8} {live_text}")
    return exits.SUCCEEDED


def cmd_diff(args, env) -> int:
    api = connect(args, env)
    diff = api.get(f"/releases/{args.a}/diff/", params={"against": args.b})
    if args.json:
        print(json.dumps(diff))
        return exits.SUCCEEDED
    commits = diff.get("commits") or {}
    if commits:
        span = f"{commits.get('from', '')[:7]}..{commits.get('to', '')[:7]}"
        print(f"commits: {span} {commits.get('compare_url', '')}".rstrip())
    env_diff = diff.get("env") or {}
    for label in ("added", "changed", "removed"):
        for item in env_diff.get(label, []):
            key = item if isinstance(item, str) else item.get("key", item)
            print(f"env {label}: {key}")
    for key, change in (diff.get("config") or {}).items():
        print(f"config {key}: {change}")
    return exits.SUCCEEDED


def _find_env(rows: list[dict], key: str, stage: str | None, region: str | None) -> dict | None:
    return next(
        (r for r in rows if r["key"] == key and r.get("stage") == stage and r.get("region") == region), None
    )


def cmd_env(args, env) -> int:
    api = connect(args, env, need_app=True)
    path = f"/apps/{args.app}/env/"
    if args.action == "list":
        rows = [
            r for r in api.pages(path)
            if (args.stage is None or r.get("stage") == args.stage)
            and (args.region is None or r.get("region") == args.region)
        ]  # fmt: skip
        if args.json:
            print(json.dumps(rows))
            return exits.SUCCEEDED
        for r in rows:
            scope = " ".join(f"{k}={r[k]}" for k in ("stage", "region") if r.get(k))
            value = "******** (secret)" if r.get("masked") else r.get("value")
            print(f"{r['key']}={value}" + (f"  [{scope}]" if scope else ""))
        return exits.SUCCEEDED
    if not args.assignment:
        raise CliError(exits.USAGE, f"env {args.action}: which key? (KEY=VALUE or KEY)")
    key, has_value, value = args.assignment.partition("=")
    existing = _find_env(api.pages(path), key, args.stage, args.region)
    if args.action == "unset":
        if existing is None:
            where = (f" for stage {args.stage}" if args.stage else "") + (
                f" in {args.region}" if args.region else ""
            )
            raise CliError(exits.REFUSED, f"{key} is not set{where}")
        api.request("DELETE", f"{path}{existing['id']}/")
        print(f"unset {key}")
        return exits.SUCCEEDED
    if not has_value:
        if not args.secret:
            raise CliError(exits.USAGE, "env set: give KEY=VALUE (or --secret to read the value from stdin)")
        # Never from argv: it would show in ps and in CI logs.
        value = getpass.getpass(f"{key}: ") if sys.stdin.isatty() else sys.stdin.read().rstrip("\r\n")
    body = {"key": key, "value": value, "secret": args.secret, "stage": args.stage, "region": args.region}
    if existing is None:
        api.post(path, json=body)
    else:
        api.request("PATCH", f"{path}{existing['id']}/", json={"value": value, "secret": args.secret})
    print(f"set {key}" + (" (secret)" if args.secret else ""))
    return exits.SUCCEEDED


COMMANDS = {
    "deploy": cmd_deploy, "status": cmd_status, "logs": cmd_logs, "rollback": cmd_rollback,
    "promote": cmd_promote, "cancel": cmd_cancel, "releases": cmd_releases, "diff": cmd_diff, "env": cmd_env,
}  # fmt: skip


def run(argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run one command; returns its exit code (see ``exits``)."""
    env = dict(os.environ) if env is None else env
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args, env)
    except CliError as exc:
        print(f"controlplane: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("controlplane: interrupted", file=sys.stderr)
        return exits.INTERRUPTED


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
