# loadtests/faults/ -- the fault scenarios: a fault-injecting proxy, a load
# client that keeps score, and the catalogue of faults with their stated
# expectations, run by the program (python -m loadtests.faults, behind
# scripts/reliability) and by the tests alike.
#
# Strategy: tools only, no test framework: proxy.py (with _relay.py) puts
# faults between the balancer and a backend, load.py records every
# request's fate, stack.py holds what one scenario started (processes
# through loadtests/supervisor.py) and the Row of figures it fills,
# backend_faults.py and balancer_faults.py drive the faults and check them,
# scenarios.py is the catalogue, __main__.py the command line.  Nothing
# here imports the tests.
"""The fault scenarios: FaultProxy, LoadClient, and the catalogue SCENARIOS."""
from __future__ import annotations

from loadtests.faults.load import LoadClient, Outcome, Response, fetch
from loadtests.faults.proxy import MODES, FaultProxy
from loadtests.faults.scenarios import CATALOGUE, SCENARIOS, Scenario, run, select
from loadtests.faults.stack import Row, ScenarioSetup

__all__ = ["CATALOGUE", "MODES", "SCENARIOS", "FaultProxy", "LoadClient", "Outcome",
           "Response", "Row", "Scenario", "ScenarioSetup", "fetch", "run", "select"]
