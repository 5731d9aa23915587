"""gservers: gevent HTTP/1.1 backends, a greenlet-pooled load balancer, and
the load-test tooling that measures them."""
from setuptools import find_packages, setup

setup(
    name="gservers",
    version="0.1.0",
    description="gevent HTTP/1.1 servers, a greenlet-pooled HTTP load balancer, "
                "and the ApacheBench/Locust sweep that measures them",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["gservers", "gservers.*", "lb", "lb.*",
                                    "loadtests", "loadtests.*"]),
    package_data={"gservers": ["site/*.html", "site/images/*"], "lb": ["status.html"]},
    install_requires=[
        "gevent>=24.2",
        "greenlet>=3.0",
        "httptools>=0.6.4",
        "prometheus_client>=0.20",
        "psutil>=5.9",
    ],
    extras_require={
        # The sweeps, the benchmark and their plots (python -m loadtests, locust -f ...).
        "loadtest": ["locust>=2.30", "matplotlib>=3.8"],
        # The test suite and its lint step (scripts/test installs both extras).
        "test": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "h11>=0.14",
                 "ruff>=0.6", "websockets>=12", "trustme>=1.1", "selenium>=4.15"],
    },
    entry_points={
        "console_scripts": [
            "gservers-backend=gservers.backend.__main__:main",
            "gservers-lb=lb.__main__:main",
        ],
    },
)
