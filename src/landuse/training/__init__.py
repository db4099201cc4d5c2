"""Training: loss and metrics, splits, the evaluation protocol and MLflow tracking."""
