"""The report: images a person reads at a glance and the self-contained HTML page."""
