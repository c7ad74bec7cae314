"""Training datasets: zip uploads, validation, storage and download."""
