"""Several trackers and gateways on one network, over NATS (issue 12).

A tracker holds node links; a gateway holds none. They meet on a NATS server the
operator runs (trusted infrastructure, like the PostgreSQL they share):

- :mod:`.messages`: the typed messages on the bus and their subjects;
- :mod:`.bus`: one NATS connection, typed publish and subscribe;
- :mod:`.tracker_relay`: a tracker publishes its nodes to the directory and relays
  jobs between gateways and its node links;
- :mod:`.relay_link`: a gateway's end of one node's relayed link;
- :mod:`.directory`: a gateway's live view of every tracker's nodes, as a
  :class:`~lichen.tracker.registry.Registry` of node connections the scheduler and
  the router use exactly as they use a tracker's own.

Node frames cross the bus unchanged (signed manifests, receipts, flow-control
credit), so a gateway checks a node's output and settles its receipts itself.
"""
