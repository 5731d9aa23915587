"""Load tests: the ApacheBench and Locust concurrency sweeps."""
