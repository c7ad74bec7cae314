"""Job artifacts (checkpoints, adapters): streamed, size-limited, checksum-verified files."""
