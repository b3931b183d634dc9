"""The common yardstick: metrics, scores from probabilities, thresholds, predictions on new data."""
