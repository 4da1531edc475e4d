"""Watching monitors: one poller per VM, the fleet of them, discovery, what a poll learnt."""
