"""The `redis-scim` command line for platform engineers and auditors.

Each subcommand is one `add_<name>_command(subparsers)` function listed in `SUBCOMMANDS`; it sets
`run`, called with the parsed arguments and returning the exit code. boto3 and the core are imported
inside the commands, so importing this module (and `--help`) stays fast.

Exit codes: 0 success; 1 the command's check failed (e.g. an audit chain is broken or has no
records); 2 usage error; 3 AWS could not be reached or refused the request.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3

    from redis_scim.audit import AuditRecord, ChainCheck

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
                check = ChainCheck(ok=False, count=error.position, broken_at=error.position,
                                   reason=f"unreadable record {error.detail}")
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


# --- entry point ---------------------------------------------------------------------------------

SUBCOMMANDS: Sequence[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = (
    add_audit_command,
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
