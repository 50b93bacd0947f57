"""The randomized fault campaign of bench/faults.py, one concern per module: nodes (the cluster
driver: namespace nodes or VMs behind one interface), scan (what a node holds: its processes and
the migration state on its disk, read inside the node), job (the checksumming job and its step
chain), inject (the faults), checks (the invariants after each run), campaign (the runs and job
turnover) and report (the summary)."""
