"""L1 transport: reaching agents on other machines; ssh.py (paramiko) is the only module here.

The stdlib channels (agent Unix socket, child-process pipes) are in omview.model.channel.
"""
