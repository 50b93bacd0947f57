"""L2 agent, the other nodes: who is in the cluster (membership), load gossip and discovery over
UDP (gossip), and the SSH links to peer agents (links)."""
