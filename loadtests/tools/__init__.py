# loadtests/tools/ -- the load generators the tooling drives, as libraries.
#
# Strategy: one module per program -- ``ab`` (ApacheBench) and ``wrk`` --
# each running its program as a subprocess, parsing what it printed with a
# pure function (tested on saved outputs) and judging a run from those
# figures alone.  ``probe`` measures one full response to the exact request
# a tool sends, the size every run is judged against.
