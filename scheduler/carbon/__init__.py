"""Carbon intensity: time series, trace readers, providers and a history-only forecaster."""
