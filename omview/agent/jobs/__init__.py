"""L2 agent, mosrun jobs: the job table (table), launching and watching them (run, jobinit), the
balancer's per-job CPU statistic (stats) and the job and migration protocol operations (ops)."""
