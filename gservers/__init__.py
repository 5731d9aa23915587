"""gservers: gevent HTTP/1.1 backends, the balancer in front of them, and the
load-test tooling that measures them."""

__version__ = "0.1.0"
