"""L2 agent, moving processes: a live migration's source side (source) and target side (target) with
what they share (common, faults, stream), where a process runs best (placement) and the automatic
balancer. Below it: agent/criu.py (CRIU runs) and node/movable.py (can this tree move)."""
