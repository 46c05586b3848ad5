"""Pseudonymous user ids: what Deskmate stores and traces instead of a platform's user id.

One function, one algorithm everywhere (the database, votes, Langfuse traces): an HMAC-SHA256 of the platform
user id keyed with the operator's secret salt (``DESKMATE_USER_HASH_SALT``), so a leaked database or trace
cannot be reversed by hashing a workspace's user list. Set the salt once before going live: changing it
makes earlier votes and conversations unattributable to their users.
"""

from __future__ import annotations

import hashlib
import hmac

USER_HASH_CHARS = 32


def hash_user(user: str, salt: str) -> str:
    """The stable pseudonym of ``user`` under ``salt``; ``""`` for no user (e.g. a system message)."""
    if not user:
        return ""
    return hmac.new(salt.encode(), user.encode(), hashlib.sha256).hexdigest()[:USER_HASH_CHARS]
