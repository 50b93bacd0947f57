"""L2 agent, the node itself: measuring it (sampler, calibrate), listing its processes (procs) and
its persistent state (flags, locks, the setpe map)."""
