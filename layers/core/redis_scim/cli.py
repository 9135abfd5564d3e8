"""The `redis-scim` command line for platform engineers and auditors.

Each subcommand is one `add_<name>_command(subparsers)` function listed in `SUBCOMMANDS`; it sets
`run`, called with the parsed arguments and returning the exit code. boto3 and the core are imported
inside the commands, so importing this module (and `--help`) stays fast.

Exit codes: 0 success; 1 the command's check failed (e.g. an audit chain is broken or has no
records); 2 usage error; 3 AWS could not be reached or refused the request.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3

    from redis_scim.audit import AuditRecord, ChainCheck
    from redis_scim.sync.reconcile import ReconcileReport

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_AWS_ERROR = 3

DEFAULT_REGION = "us-east-1"
# moto (the local stack) accepts any credentials but botocore refuses to sign without some.
_LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


def aws_session() -> boto3.Session:
    """A boto3 session that also works against the local stack with only AWS_ENDPOINT_URL set.

    The region defaults to us-east-1 when none is configured; when AWS_ENDPOINT_URL is set and no
    credentials are configured, dummy ones are used (moto does not check them).
    """
    import boto3

    session = boto3.Session()
    region = session.region_name or DEFAULT_REGION
    if os.environ.get("AWS_ENDPOINT_URL") and session.get_credentials() is None:
        return boto3.Session(region_name=region, **_LOCAL_CREDENTIALS)
    return boto3.Session(region_name=region)


# --- audit ---------------------------------------------------------------------------------------


def add_audit_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="print a user's audit history and verify its hash chain",
        description="Print every audit record of a user (oldest first) and verify the user's hash chain. "
        "Exits 1 when the chain is broken or the user has no records. The table is AUDIT_TABLE "
        "(default redis-scim-audit); set AWS_ENDPOINT_URL to read the local stack.",
    )
    parser.add_argument(
        "--user",
        required=True,
        metavar="NAME",
        help="SCIM userName (case-insensitive; former names of renamed or deleted users work) or SCIM id",
    )
    parser.add_argument("--json", action="store_true", help="print the records and the check as JSON")
    parser.set_defaults(run=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from redis_scim.audit import AuditTrail, ChainCheck, UnreadableAuditRecord, verify_chain
    from redis_scim.config import Settings

    trail = AuditTrail(Settings.from_env().audit_table, aws_session().client("dynamodb"))
    results: list[tuple[str, list[AuditRecord], ChainCheck]] = []
    try:
        # A name first; a SCIM id when no record ever carried that name.
        for user_id in trail.find_user_ids(args.user) or [args.user]:
            try:
                records = trail.history(user_id)
                check = verify_chain(records)
            except UnreadableAuditRecord as error:
                records = []
                check = ChainCheck(
                    ok=False,
                    count=error.position,
                    broken_at=error.position,
                    reason=f"unreadable record {error.detail}",
                )
            if records or check.broken_at is not None:
                results.append((user_id, records, check))
    except (BotoCoreError, ClientError) as error:
        print(f"redis-scim audit: cannot read the audit trail: {error}", file=sys.stderr)
        return EXIT_AWS_ERROR

    if args.json:
        print(json.dumps(_audit_json(args.user, results), indent=2))
    elif not results:
        print(f"no audit records for user {args.user}")
    else:
        for user_id, records, check in results:
            _print_history(user_id, records, check)
    return EXIT_OK if results and all(check.ok for _, _, check in results) else EXIT_CHECK_FAILED


def _audit_json(query: str, results: list[tuple[str, list[AuditRecord], ChainCheck]]) -> dict[str, Any]:
    return {
        "user": query,
        "verified": bool(results) and all(check.ok for _, _, check in results),
        "users": [
            {
                "user_id": user_id,
                "records": [record.to_json() for record in records],
                "chain": {
                    "ok": check.ok,
                    "count": check.count,
                    "broken_at": check.broken_at,
                    "reason": check.reason,
                    "expired_before": check.expired_before,
                },
            }
            for user_id, records, check in results
        ],
    }


def _print_history(user_id: str, records: list[AuditRecord], check: ChainCheck) -> None:
    names = list(dict.fromkeys(record.user_name for record in records))
    print(f"user {' / '.join(names) or '?'} (SCIM id {user_id})")
    for record in records:
        verified = "verified" if record.verified else "not verified"
        print(f"{record.at}  #{record.seq}  {record.target}  {record.action}  {record.outcome}  {verified}")
        print(f"    by {_describe_cause(record)}")
        print(f"    acl: {record.acl_before or '(none)'} -> {record.acl_after or '(none)'}")
        if record.reason:
            print(f"    reason: {record.reason}")
    if check.ok:
        expired = (
            f" ({check.expired_before} older records expired by retention)" if check.expired_before else ""
        )
        print(f"chain verified: {check.count} records{expired}")
    else:
        print(f"chain BROKEN at record {check.broken_at}: {check.reason}")


def _describe_cause(record: AuditRecord) -> str:
    cause, actor = record.cause, record.cause.actor
    who = ", ".join(
        f"{label} {value}"
        for label, value in (
            ("token", actor.token_id),
            ("from", actor.source_ip),
            ("agent", actor.user_agent),
        )
        if value
    )
    return f"{cause.operation} (request {cause.request_id}{', ' + who if who else ''})"


# --- token ---------------------------------------------------------------------------------------


def add_token_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "token",
        help="create, list and revoke the SCIM API's bearer tokens",
        description="Manage the bearer tokens the SCIM API accepts. Only their SHA-256 is stored, in the "
        "Secrets Manager secret TOKEN_SECRET_ID (default redis-scim/scim-tokens); last use is read from "
        "DIRECTORY_TABLE (default redis-scim-directory). Set AWS_ENDPOINT_URL to manage the local stack. "
        "The API picks up a change within a minute (its cache of the list).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="create a token and print it once",
        description="Create a token, store its SHA-256 and print the token once on stdout (the id and "
        "expiry go to stderr). It is not shown again: paste it into the identity provider now.",
    )
    create.add_argument(
        "--expires", default="90d", metavar="DURATION", help="lifetime such as 90d, 12h or 2w (default 90d)"
    )
    create.add_argument(
        "--id", dest="token_id", metavar="ID", help="the entry's id (default tok-<date>-<random>)"
    )
    create.set_defaults(run=run_token_create)
    listing = actions.add_parser("list", help="list tokens: id, created, expires, last used, state")
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    listing.set_defaults(run=run_token_list)
    revoke = actions.add_parser("revoke", help="revoke a token by id (the API refuses it within a minute)")
    revoke.add_argument("token_id", metavar="ID")
    revoke.set_defaults(run=run_token_revoke)


def _token_list() -> Any:
    from redis_scim.auth import TokenList
    from redis_scim.config import Settings

    return TokenList(aws_session().client("secretsmanager"), Settings.from_env().token_secret_id)


def _token_command(action: Callable[[], int]) -> int:
    """Run a token action, turning AWS failures and refused requests into exit codes."""
    from botocore.exceptions import BotoCoreError, ClientError

    from redis_scim.auth import TokenAdminError

    try:
        return action()
    except TokenAdminError as error:
        print(f"redis-scim token: {error}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except (BotoCoreError, ClientError) as error:
        print(f"redis-scim token: cannot reach the token list: {error}", file=sys.stderr)
        return EXIT_AWS_ERROR


def run_token_create(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from redis_scim.auth import TokenAdminError, parse_duration

    try:
        lifetime = parse_duration(args.expires)
    except TokenAdminError as error:
        print(f"redis-scim token create: {error}", file=sys.stderr)
        return EXIT_USAGE

    def create() -> int:
        created = _token_list().create(expires_in=lifetime, now=datetime.now(UTC), token_id=args.token_id)
        expires = created.entry.expires.isoformat() if created.entry.expires else "never"
        print(
            f"created token {created.entry.id}, expires {expires}; it is shown only this once:",
            file=sys.stderr,
        )
        print(created.token)
        return EXIT_OK

    return _token_command(create)


def run_token_list(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from redis_scim.auth import token_state
    from redis_scim.auth.usage import DynamoTokenUsage
    from redis_scim.config import Settings
    from redis_scim.observability import metrics

    def listing() -> int:
        entries = _token_list().entries()
        usage = DynamoTokenUsage(
            Settings.from_env().directory_table, aws_session().client("dynamodb"), metrics=metrics
        )
        last_used = usage.last_used(entry.id for entry in entries)
        now = datetime.now(UTC)
        rows = [
            {
                "id": entry.id,
                "created": entry.created.isoformat(),
                "expires": entry.expires.isoformat() if entry.expires else None,
                "last_used": last_used[entry.id].isoformat() if entry.id in last_used else None,
                "revoked": entry.revoked.isoformat() if entry.revoked else None,
                "state": token_state(entry, now),
            }
            for entry in entries
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
            return EXIT_OK
        columns = ("id", "created", "expires", "last_used", "state")
        table = [[str(row[column] or "-") for column in columns] for row in rows]
        widths = [max([len(column), *(len(line[i]) for line in table)]) for i, column in enumerate(columns)]
        for line in [[column.upper().replace("_", " ") for column in columns], *table]:
            print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        return EXIT_OK

    return _token_command(listing)


def run_token_revoke(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    def revoke() -> int:
        entry = _token_list().revoke(args.token_id, now=datetime.now(UTC))
        assert entry.revoked is not None
        print(f"token {entry.id} revoked at {entry.revoked.isoformat()}; the API refuses it within a minute")
        return EXIT_OK

    return _token_command(revoke)


# --- plan / reconcile ----------------------------------------------------------------------------


def add_plan_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="show what a reconciliation would change on the targets",
        description="Compare every target (every node) with the Directory and the policy and print what "
        "would change: missing, drifted, node-divergent and stale users, and ghosts. Changes nothing. "
        "Exits 0 when every target is in sync, 1 when something would change or a target is unreachable. "
        "The Directory is DIRECTORY_TABLE (set AWS_ENDPOINT_URL for the local stack).",
    )
    _reconcile_options(parser)
    parser.set_defaults(run=run_plan)


def add_reconcile_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "reconcile",
        help="repair drift, act on ghosts per policy, re-drive stale pending users (with --apply)",
        description="Reconcile the targets with the Directory: repair missing, drifted, node-divergent and "
        "stale users through the sync engine (audited, operation 'reconciler'), report, disable or delete "
        "ghosts per the target's `ghosts:` setting, and (for all targets) re-drive users whose pending "
        "marker is older than RECONCILE_PENDING_GRACE_SECONDS (default 300). Without --apply it only "
        "prints the plan, like `plan`. Exits 0 when everything was repaired, 1 otherwise.",
    )
    parser.add_argument("--apply", action="store_true", help="make the changes (without it: a dry run)")
    _reconcile_options(parser)
    parser.set_defaults(run=run_reconcile)


def _reconcile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", action="append", metavar="T", help="only this policy target (repeatable; default all)"
    )
    parser.add_argument(
        "--policy", metavar="PATH", help="the policy file (default: $POLICY, else examples/policy.yaml)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--all-rules",
        action="store_true",
        help="read every user's rules now (slow on large targets) instead of the recent users and a "
        "rotating slice within the time budget",
    )
    parser.add_argument(
        "--progress", action="store_true", help="show a progress bar on stderr even when it is not a terminal"
    )


def run_plan(args: argparse.Namespace) -> int:
    return _run_reconciler(args, apply=False)


def run_reconcile(args: argparse.Namespace) -> int:
    if not args.apply:
        print("redis-scim reconcile: dry run, nothing is changed (pass --apply to repair)", file=sys.stderr)
    return _run_reconciler(args, apply=args.apply)


def _run_reconciler(args: argparse.Namespace, *, apply: bool) -> int:
    import logging

    from botocore.exceptions import BotoCoreError, ClientError

    from redis_scim.config import Settings
    from redis_scim.errors import PolicyError
    from redis_scim.sync.reconcile import Reconciler, ReconcileSettings
    from redis_scim.sync.runtime import build_engine

    # The report says everything the warnings would (ghosts, unreachable targets).
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    command = "reconcile" if apply else "plan"
    settings = Settings.from_env()
    if args.policy:
        settings = dataclasses.replace(settings, policy=args.policy)
    progress = _ProgressBar(force=args.progress)
    try:
        # A standard-library logger at ERROR: the audit trail's JSON log lines stay off stdout.
        engine = build_engine(settings, aws_session(), logger=logging.getLogger("redis_scim.cli"))
        try:
            reconciler = Reconciler(engine, settings=ReconcileSettings.from_env(os.environ))
            run = reconciler.reconcile if apply else reconciler.plan
            report = run(args.target, all_rules=args.all_rules, progress=progress)
        finally:
            progress.finish()
            for target in engine.targets.values():
                target.close()
    except PolicyError as error:
        print(f"redis-scim {command}: {error.detail}", file=sys.stderr)
        return EXIT_USAGE
    except (BotoCoreError, ClientError) as error:
        print(f"redis-scim {command}: cannot reach the Directory: {error}", file=sys.stderr)
        return EXIT_AWS_ERROR
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_report(report)
    if apply:
        ok = not report.unreachable and not report.failed_repairs
    else:
        ok = not report.unreachable and not report.discrepancies
    return EXIT_OK if ok else EXIT_CHECK_FAILED


_DETAIL_WIDTH = 100


def _print_report(report: ReconcileReport) -> None:
    """The report as readable tables: a summary line per target, the discrepancies, the repairs."""
    for target in report.targets:
        if target.unreachable is not None:
            print(f"target {target.target}: UNREACHABLE: {target.unreachable}")
            continue
        print(
            f"target {target.target}: {len(target.nodes)} node(s), {target.usernames} username(s), "
            f"{target.desired} desired, rules compared for {target.rules_read} of {target.rules_eligible}"
        )
    rows = [
        [d.target, str(d.finding), d.username, d.user_id or "-", str(len(d.present_on)), _short(d.detail)]
        for d in report.discrepancies
    ]
    print()
    if rows:
        _print_table(("target", "finding", "username", "scim_id", "nodes", "detail"), rows)
    else:
        print("no differences found")
    repairs = [r for target in report.targets for r in target.repairs] + report.redriven
    if report.applied:
        print()
        if repairs:
            _print_table(
                ("target", "subject", "action", "result", "detail"),
                [
                    [r.target or "*", r.subject, r.action, "ok" if r.ok else "FAILED", _short(r.detail)]
                    for r in repairs
                ],
            )
        else:
            print("nothing to repair")
    counts = ", ".join(f"{count} {finding}" for finding, count in report.counts().items() if count)
    done = "reconciled" if report.applied else "planned"
    print(f"\n{done} in {report.seconds:.1f} s: {counts or 'in sync'}")


def _short(text: str) -> str:
    return text if len(text) <= _DETAIL_WIDTH else text[: _DETAIL_WIDTH - 1] + "…"


def _print_table(columns: Sequence[str], rows: list[list[str]]) -> None:
    widths = [max([len(column), *(len(row[i]) for row in rows)]) for i, column in enumerate(columns)]
    for line in [[column.upper().replace("_", " ") for column in columns], *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


class _ProgressBar:
    """A one-line progress bar on stderr for long runs: drawn only after the first second, at most
    ten times a second, and only on a terminal unless forced."""

    def __init__(self, *, force: bool = False, width: int = 30) -> None:
        import time

        self._clock = time.monotonic
        self._started = self._clock()
        self._drawn_at = 0.0
        self._enabled = force or sys.stderr.isatty()
        self._width = width
        self._shown = False

    def __call__(self, done: int, total: int, label: str) -> None:
        now = self._clock()
        if not self._enabled or now - self._started < 1.0 or (now - self._drawn_at < 0.1 and done < total):
            return
        self._drawn_at = now
        filled = self._width * done // max(total, 1)
        bar = "#" * filled + "." * (self._width - filled)
        print(f"\r{label:<24} [{bar}] {done}/{total}", end="", file=sys.stderr, flush=True)
        self._shown = True

    def finish(self) -> None:
        if self._shown:
            print(file=sys.stderr, flush=True)


# --- entry point ---------------------------------------------------------------------------------

SUBCOMMANDS: Sequence[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = (
    add_audit_command,
    add_token_command,
    add_plan_command,
    add_reconcile_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redis-scim",
        description="Identity-provider-driven Redis/Valkey ACL users: operations and audit.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in SUBCOMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exit_code: int = args.run(args)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
