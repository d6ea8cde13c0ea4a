"""``rtq-nb acl``: print the ``ACL SETUSER`` line of a least-privilege Redis user for one queue
(see :mod:`rtq_nb.protocol.acl`). The line goes to stdout, diagnostics to the log; the
password is read from an environment variable and only its SHA-256 is printed."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from rtq_nb.errors import ConfigurationError
from rtq_nb.protocol import acl

__all__ = ["add_parser", "cmd_acl"]

log = logging.getLogger("rtq_nb.cli")

DESCRIPTION = """\
Print the ACL SETUSER command creating a Redis 7 user that may do exactly what ROLE needs on
one queue, and nothing else:

  client   submit, call, stream, cancel, extend and read its own requests; queue counts,
           workers, stats (read only). With --client-id it reaches only the requests whose
           ids start with CLIENT_ID- (Client(client_id=CLIENT_ID) makes those; a custom
           request_id must start with it too).
  worker   serve the queue (rtq-nb worker / Worker): pop, stream, complete, heartbeat,
           renew, reap, hand back, its registry entry.
  monitor  every read view (status, pending, snapshot, workers, stats, history, pandas
           views, the queue monitor); no writes and no scripts.

The output is one command per line, for redis-cli (run as an admin user):

  RTQ_PW=... rtq-nb acl --queue jobs --role client --password-env RTQ_PW | redis-cli -u URL

For an ACL file (aclfile), write `user` instead of the leading `ACL SETUSER`. Then connect
with redis://USER:PASSWORD@host:port. Applying a line again replaces that user entirely.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``acl`` on the ``rtq-nb`` subcommands (``sub``: their argparse action)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "acl",
        help="print the ACL SETUSER line of a least-privilege Redis user",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--queue", required=True, help="the queue the user may use")
    p.add_argument("--role", required=True, choices=list(acl.ROLES), help="what the user does")
    p.add_argument("--prefix", default="rtq", help="key prefix (default: %(default)s)")
    p.add_argument(
        "--user", default=None, help="ACL user name (default: rtq-ROLE-QUEUE[-CLIENT_ID])"
    )
    p.add_argument(
        "--client-id",
        default=None,
        help="client role: restrict the user to this client's requests (ids CLIENT_ID-...; "
        "A-Z a-z 0-9 _ . only)",
    )
    p.add_argument(
        "--shards",
        type=int,
        default=1,
        help="a sharded queue's shard count: the rules cover every shard (default 1)",
    )
    pw = p.add_mutually_exclusive_group(required=True)
    pw.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from environment variable VAR (printed only as its SHA-256)",
    )
    pw.add_argument("--nopass", action="store_true", help="no password (any password works)")
    p.set_defaults(fn=cmd_acl)
    return p


def cmd_acl(a: argparse.Namespace) -> int:
    password = None
    if a.password_env:
        password = os.environ.get(a.password_env)
        if not password:
            raise ConfigurationError(
                f"environment variable {a.password_env} is not set or empty: put the user's "
                "password in it (it is never printed)"
            )
    lines = acl.setuser_lines(
        a.role,
        queue=a.queue,
        prefix=a.prefix,
        user=a.user,
        client_id=a.client_id,
        password=password,
        nopass=a.nopass,
        shards=a.shards,
    )
    if a.nopass:
        log.warning("user without a password: anyone who can reach Redis can use this role")
    log.info("role %s on queue %r (prefix %r): %d line(s)", a.role, a.queue, a.prefix, len(lines))
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0
