"""Load for Locust (``locust -f load``): publishers on an open model, subscribers as the apps subscribe, exact
latency in HdrHistograms, completeness without a record per delivery, judged by the gate's criteria.

Pure parts (no Locust, no gevent: importable anywhere, tested under pytest): ``hdr`` (histograms), ``seqset``
(the sequence numbers a subscriber saw), ``tally`` (what a process counts; the master's sum), ``judging`` (the
criteria's results from those), ``quotas``, ``world``, ``sidecar`` (the stack and the fault proxy in a child
process). Locust's side (importing it monkey-patches the process with gevent): ``plugin`` (options and events:
the run's lifecycle, worker -> master reports), ``run`` (the run directory and the verdict), ``users``
(publisher and subscriber users), ``profiles`` (load shapes). The locustfiles are in ``load/`` at the root.
"""
