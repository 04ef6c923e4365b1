"""The one-command reproduction behind ``rmt-reproduce``: experiments, their analysis, figures and MLflow runs."""
