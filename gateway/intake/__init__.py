"""Intake: the one path from a transport to the central store (ingest, outbox, forwarder)."""
