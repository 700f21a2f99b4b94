"""node: the agent that serves engines to trackers."""
