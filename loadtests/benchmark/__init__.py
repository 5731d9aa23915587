# loadtests/benchmark/ -- the gservers balancer against haproxy and nginx
# (``python -m loadtests.benchmark``, behind scripts/benchmark).
#
# Strategy: the pure parts -- workloads and the plan (workloads.py), runs and
# medians (stats.py), the targets (targets.py), the haproxy and nginx
# configs (configs.py), the report (report.py) -- are apart from the parts
# that touch processes and sockets: the fleet on loadtests.supervisor
# (fleet.py), the runs (runner.py) and the idle-connection probe (idle.py).
# __main__.py reads the command line and sequences them.
