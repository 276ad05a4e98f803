"""Prefect flows and deployments for mfa (thin wrappers around mfa.run's steps)."""
