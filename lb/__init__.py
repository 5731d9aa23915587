"""The load balancer: ``python -m lb``."""
