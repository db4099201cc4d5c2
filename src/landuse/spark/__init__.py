"""Spark plumbing: the session builder (the only place a session is built) and table schemas."""
