"""L2 agent, the node itself: measuring it (sampler, calibrate), listing its processes (procs) with
whether each could move (movable), and its persistent state (flags, locks, the setpe map)."""
