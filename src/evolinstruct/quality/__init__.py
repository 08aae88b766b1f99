"""Quality control: scorers, filters and selection over a run's records."""
