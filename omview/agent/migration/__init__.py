"""L2 agent, moving processes: a live migration's source side (source) and target side (target) with
what they share (common, faults, stream, criu), where a process runs best (placement), adopting plain
process trees as jobs (adopt) and the automatic balancer."""
