"""L2 agent, mosrun jobs: the job table (table), launching and watching them (run, jobinit), the
balancer's per-job CPU statistic (stats) and the checks of job and peer request arguments (wire).
The protocol operations over jobs and migration live above this room, in agent/jobops.py."""
