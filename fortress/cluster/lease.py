"""Which control node may publish the snapshot and consume usage: a lease in Redis, renewed each second.

Exactly one machine should have `role = "control"`. The lease makes a mistake harmless instead of
noisy: two control nodes would otherwise overwrite each other's snapshot ten times a second and split
the usage stream between two databases. The lease holds the holder's node name, so a control node
restarted under the same name takes it back at once instead of waiting for it to expire; another
name waits until the holder has been silent for TTL_S.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fortress.cluster.link import CONTROL_LEASE

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger("fortress.cluster")
TTL_S = 10.0

# Take the lease if it is free or already ours, and say who holds it.
_HOLD_LUA = """
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return holder
"""


class Lease:
    def __init__(self, client: redis.asyncio.Redis, name: str, ttl_s: float = TTL_S) -> None:
        self.name = name
        self.ttl_ms = int(ttl_s * 1000)
        self.held = False
        self.holder = ""
        self._script = client.register_script(_HOLD_LUA)

    async def keep(self) -> bool:
        """Take or renew the lease; False (logged once per change) while another node holds it."""
        holder = (await self._script(keys=[CONTROL_LEASE], args=[self.name, self.ttl_ms])).decode()
        held = holder == self.name
        if held != self.held or holder != self.holder:
            if held:
                log.info(
                    "control node %s holds the lease: it publishes the snapshot and stores usage", self.name
                )
            else:
                log.warning(
                    "control node %s holds the lease; this one (%s) publishes nothing and stores no usage "
                    'from other nodes: exactly one machine should have [cluster] role = "control"',
                    holder,
                    self.name,
                )
        self.held, self.holder = held, holder
        return held
