"""How far a network trusts a node: the levels a membership record, a node's manifest
and a privacy class's allow-list name.

``owner``: the operator's own devices (certified by the operator's account key);
``trusted``: devices the operator vouches for; ``community``: everyone else who joined
with an invite. The values are the strings stored in the database, sent on the wire
and written in policy files.
"""

from __future__ import annotations

from enum import StrEnum


class TrustLevel(StrEnum):
    OWNER = "owner"
    TRUSTED = "trusted"
    COMMUNITY = "community"
