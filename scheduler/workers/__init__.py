"""GPU workers: registration, liveness, claims and leases of jobs."""
