"""Energy and carbon accounting of job attempts, and the per-job energy report."""
