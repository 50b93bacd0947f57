#!/bin/sh
# The init of an omview test VM and its agent control (omview.testbed.vm; docs/cluster.md).
#
# With no argument it runs as PID 1: the initrd mounted the root (a qcow2 overlay), the project's
# shares (read-only, at their host paths) and this VM's own files (/mnt/omview-node, read-only,
# written by the host for this VM) and the log share (/var/log/omview, writable); this script sets
# up the machine (mounts, name, address, ssh, omview config), starts sshd and the agent, and ends
# as a reaper of orphans, as init does. It lives on the share so it can change without rebuilding
# the image.
#
# `guest_init.sh agent-start|agent-stop|agent-kill|agent-pid` is what `omview-cluster agent` runs
# in the VM over ssh.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
NODE=/mnt/omview-node
LOG=/var/log/omview
PIDFILE=/run/omview-guest-agent.pid  # ours; the agent keeps its own /run/omview/agent.pid
SOCK=/run/omview/agent.sock

agent_pid() {  # the agent's PID if it still runs (the PID file alone could name a reused PID)
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'omview-agent run' || return 1
    echo "$pid"
}

agent_start() {
    if pid=$(agent_pid); then echo "agent already runs (PID $pid)" >&2; return 1; fi
    rm -f "$SOCK"  # a killed agent's socket would fake readiness
    . "$NODE/guest.env"
    echo "--- omview-cluster: agent start $(date '+%Y-%m-%d %H:%M:%S')" >>"$LOG/agent.log"
    setsid "$OMV_AGENT" run --config /etc/omview/agent.toml </dev/null >>"$LOG/agent.log" 2>&1 &
    echo $! >"$PIDFILE"
    i=0
    while [ $i -lt "${1:-600}" ]; do  # tenths of a second
        [ -S "$SOCK" ] && { echo $!; return 0; }
        kill -0 $! 2>/dev/null || { echo "agent exited:" >&2; tail -n 8 "$LOG/agent.log" >&2; return 1; }
        sleep 0.1; i=$((i + 1))
    done
    echo "agent socket $SOCK not ready" >&2
    return 1
}

agent_end() {  # agent_end GRACE_TENTHS: SIGTERM, wait, then SIGKILL (0: SIGKILL at once)
    pid=$(agent_pid) || { rm -f "$PIDFILE"; return 0; }
    if [ "$1" -gt 0 ]; then
        kill -TERM "$pid"
        i=0
        while [ $i -lt "$1" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    fi
    kill -KILL "$pid" 2>/dev/null
    rm -f "$PIDFILE"
}

case "${1:-boot}" in
    agent-start) agent_start "${2:-600}"; exit $? ;;
    agent-stop) agent_end 100; exit 0 ;;
    agent-kill) agent_end 0; exit 0 ;;
    agent-pid) agent_pid; exit $? ;;
    boot) ;;
    *) echo "usage: $0 [agent-start|agent-stop|agent-kill|agent-pid]" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------- PID 1 from here on
say() { echo "omview-guest: $*" >/dev/console; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=755 run /run
# The initrd mounted the project's shares at their host paths; one under /tmp (a checkout there, as
# CI's clones may be) would vanish under the new tmpfs: move such mounts aside and back over it.
under=""
nested() { for u in $under; do case $1 in "$u"/*) return 0 ;; esac; done; return 1; }  # moves with $u
while read -r _dev mnt _rest; do
    case $mnt in /tmp/*) nested "$mnt" || under="$under $mnt" ;; esac
done </proc/mounts
i=0
for m in $under; do mkdir -p "/run/omv-tmp/$i" && mount --move "$m" "/run/omv-tmp/$i"; i=$((i + 1)); done
mount -t tmpfs -o mode=1777 tmp /tmp
i=0
for m in $under; do mkdir -p "$m" && mount --move "/run/omv-tmp/$i" "$m"; i=$((i + 1)); done
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -o remount,rw / 2>/dev/null
mkdir -p /run/sshd /run/omview /etc/omview /var/lib/omview /root/.ssh
chmod 700 /root/.ssh
. "$NODE/guest.env"
hostname "$OMV_NAME"
ip link set lo up
ip link set eth0 up
ip addr add "$OMV_ADDR" dev eth0
ip route add default via "$OMV_GW"
# this VM's identity and the cluster's: host key, client key, known hosts, omview config
cp "$NODE/hosts" /etc/hosts
echo "$OMV_NAME" >/etc/hostname
install -m 600 "$NODE/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
install -m 644 "$NODE/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
install -m 600 "$NODE/id_ed25519" /root/.ssh/id_ed25519
install -m 600 "$NODE/authorized_keys" /root/.ssh/authorized_keys
install -m 644 "$NODE/known_hosts" /etc/ssh/ssh_known_hosts
install -m 644 "$NODE/ssh_config" /etc/ssh/ssh_config
install -m 644 "$NODE/sshd_config" /etc/ssh/sshd_config
install -m 644 "$NODE/agent.toml" /etc/omview/agent.toml
install -m 644 "$NODE/openmosix.map" /etc/omview/openmosix.map
install -m 600 "$NODE/cluster.key" /etc/omview/cluster.key
/usr/sbin/sshd -E "$LOG/sshd.log" && say "sshd up on $OMV_ADDR"
if [ "$OMV_START_AGENT" = 1 ]; then
    if agent_start 1200 >/dev/null; then say "agent up"; else say "agent failed"; fi
fi
say "ready"
# as PID 1: reap every orphan (the same reaper as a namespace node with a PID namespace)
exec /usr/bin/python3 -c "$OMV_REAPER"
