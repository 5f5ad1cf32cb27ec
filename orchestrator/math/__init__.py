"""math layer."""
