"""L2 agent, moving processes: CRIU plumbing (criu), live migration of a job between two agents
(migrate, stream), adopting plain process trees as jobs (adopt) and the automatic balancer."""
