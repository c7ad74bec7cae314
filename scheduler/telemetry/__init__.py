"""Live training telemetry: per-GPU figures from heartbeats, their history and health warnings."""
