#!/usr/bin/env python3
"""Chaos harness for raftsync: real node processes on separate test hosts (network namespaces),
a recorded workload, randomly scheduled faults from a printed seed, and a checker.

Usage:
  chaos.py --binary PATH/raftsync [--peer-binary PATH/chaos_peer] [--seeds 1,2,3]
           [--minutes-per-seed 1] [--nodes 3] [--keep]
           [--faults kill,partition,asym,loss,diskfull,wipe,replace,clock]
  RAFTSYNC_CHAOS_MINUTES=N chaos.py --binary ...        # soak: N minutes per seed
  RAFTSYNC_CHAOS_SEEDS=7 chaos.py --binary ...          # replay one seed

Everything it creates (namespaces, veth pairs, bridge, nftables tables inside its namespaces,
tmpfs mounts, processes, the temp dir) is recorded and removed in a finally/atexit path, also on
SIGINT/SIGTERM. Without permission for `ip netns` it falls back to 127.0.0.1 with distinct ports
(and says so); network faults are then skipped.

Exit code 0 only if every seed passed. See docs/reliability.md.
"""

import argparse
import atexit
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from checker import Checker, content_of, tree_digest

DEFAULT_FAULTS = "kill,partition,asym,loss"
ALL_FAULTS = "kill,partition,asym,loss,diskfull,wipe,replace,clock"
# libfaketime (Debian package faketime): the multi-threaded variant, preloaded into every node when
# the clock fault is on. It moves CLOCK_REALTIME only (see Node.start).
FAKETIME_LIBRARIES = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                      "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
                      "/usr/lib/faketime/libfaketimeMT.so.1"]
RSS_LIMIT_KIB = 512 * 1024


def log(msg):
    sys.stdout.write("[chaos %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


def wait_until(cond, timeout, interval=0.05):
    """Polls cond() until it returns a true value or timeout seconds pass; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def run(cmd, check=True, timeout=30, quiet=False):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s" %
                           (r.returncode, " ".join(cmd), r.stdout.decode(errors="replace")))
    return r


# ---------------------------------------------------------------------------------------------
# Cleanup: every resource is registered right after it is created and released in reverse order.
# ---------------------------------------------------------------------------------------------
class Cleanup:
    def __init__(self):
        self.actions = []

    def push(self, description, fn):
        self.actions.append((description, fn))

    def run(self):
        while self.actions:
            description, fn = self.actions.pop()
            try:
                fn()
            except Exception as e:  # keep tearing down the rest
                log("cleanup '%s' failed: %s" % (description, e))


CLEANUP = Cleanup()
atexit.register(CLEANUP.run)


def _on_signal(signum, _frame):
    log("signal %d: tearing down" % signum)
    CLEANUP.run()
    sys.exit(128 + signum)


# ---------------------------------------------------------------------------------------------
# Test hosts
# ---------------------------------------------------------------------------------------------
class Hosts:
    """One test host per node id. netns mode: host i is namespace <tag>-n<i> with eth0 =
    10.213.0.i/24, its veth peer v<i> enslaved to bridge br0 in namespace <tag>-b; br0 itself has
    10.213.0.250, the "outsider" host the forged non-member peer runs on. Loopback mode:
    127.0.0.1:port."""

    OUTSIDER_ADDRESS = "10.213.0.250"

    def __init__(self, ids, use_netns):
        self.ids = list(ids)
        self.netns = False
        self.tag = "rschaos%d" % os.getpid()
        self.ports = {}
        if use_netns:
            try:
                self._create()
                self.netns = True
            except Exception as e:
                log("cannot create network namespaces (%s); FALLING BACK to 127.0.0.1 with "
                    "distinct ports, network faults disabled" % str(e).splitlines()[0])
        if not self.netns:
            self.ports = self._free_ports(self.ids)

    def bridge_ns(self):
        return self.tag + "-b"

    def ns(self, i):
        return "%s-n%d" % (self.tag, i)

    def _add_ns(self, name):
        existing = run(["ip", "netns", "list"]).stdout.decode().split()
        if name in existing:
            raise RuntimeError("namespace %s already exists (not ours)" % name)
        run(["ip", "netns", "add", name])
        CLEANUP.push("netns " + name, lambda: run(["ip", "netns", "del", name], check=False))
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _create(self):
        b = self.bridge_ns()
        self._add_ns(b)
        run(["ip", "-n", b, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", b, "link", "set", "br0", "up"])
        run(["ip", "-n", b, "addr", "add", self.OUTSIDER_ADDRESS + "/24", "dev", "br0"])
        for i in self.ids:
            self._add_ns(self.ns(i))
            # Both ends are created inside our namespaces: deleting them removes the pair.
            run(["ip", "-n", b, "link", "add", "v%d" % i, "type", "veth", "peer", "name", "eth0",
                 "netns", self.ns(i)])
            run(["ip", "-n", b, "link", "set", "v%d" % i, "master", "br0", "up"])
            run(["ip", "-n", self.ns(i), "addr", "add", "10.213.0.%d/24" % i, "dev", "eth0"])
            run(["ip", "-n", self.ns(i), "link", "set", "eth0", "up"])
    @staticmethod
    def _free_ports(ids):
        socks, ports = [], {}
        for i in ids:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            ports[i] = s.getsockname()[1]
            socks.append(s)
        for s in socks:
            s.close()
        return ports

    def address(self, i):
        if self.netns:
            return "10.213.0.%d:7001" % i
        return "127.0.0.1:%d" % self.ports[i]

    def prefix(self, i):
        return ["ip", "netns", "exec", self.ns(i)] if self.netns else []

    def outsider_prefix(self):
        """Runs a program on the outsider host (the bridge namespace), which is no member."""
        return ["ip", "netns", "exec", self.bridge_ns()] if self.netns else []

    def host(self, i):
        return self.address(i).rsplit(":", 1)[0]

    # --- network faults (netns mode only) ---
    def link(self, i, up):
        run(["ip", "-n", self.bridge_ns(), "link", "set", "v%d" % i, "up" if up else "down"])

    def nft(self, i, script):
        r = subprocess.run(["ip", "netns", "exec", self.ns(i), "nft", "-f", "-"],
                           input=script.encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("nft failed: " + r.stdout.decode(errors="replace"))

    def drop_from(self, i, j):
        """Host i drops every packet coming from host j (asymmetric: i still sends to j)."""
        self.nft(i, "table inet chaos {\n chain in { type filter hook input priority 0; "
                    "ip saddr 10.213.0.%d drop; }\n}" % j)

    def loss(self, i, percent):
        self.nft(i, "table inet chaos {\n chain in { type filter hook input priority 0; "
                    "numgen random mod 100 < %d drop; }\n chain out { type filter hook output "
                    "priority 0; numgen random mod 100 < %d drop; }\n}" % (percent, percent))

    def clear_nft(self, i):
        run(["ip", "netns", "exec", self.ns(i), "nft", "delete", "table", "inet", "chaos"],
            check=False)


# ---------------------------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------------------------
class Node:
    def __init__(self, cluster, i):
        self.c = cluster
        self.id = i
        self.root = os.path.join(cluster.base, "host%d" % i)  # may become a tmpfs mount point
        self.folder = os.path.join(self.root, "folder")
        self.log_path = os.path.join(cluster.base, "node%d.log" % i)
        self.proc = None
        self.max_rss_kib = 0
        self.tmpfs = False
        # The node's wall-clock offset, read by libfaketime (clock fault): "+0" or "+3600" etc.
        self.clock_file = os.path.join(cluster.base, "clock%d.rc" % i)
        self.set_clock_offset(0)

    def set_clock_offset(self, seconds):
        tmp = self.clock_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%+d\n" % seconds)
        os.rename(tmp, self.clock_file)  # libfaketime never reads a half-written file

    def start(self, join=False):
        args = self.c.hosts.prefix(self.id) + [
            self.c.binary, "--id", str(self.id), "--dir", self.folder,
            "--listen", self.c.hosts.address(self.id), "--secret-file", self.c.secret,
            "--snapshot-entries", str(self.c.snapshot_entries),
            "--log-level", self.c.args.log_level] + (["--join"] if join else [])
        for j in self.c.ids:
            if j != self.id:
                args += ["--peer", "%d=%s" % (j, self.c.hosts.address(j))]
        env = None
        if self.c.faketime:
            # A node cannot have its own CLOCK_REALTIME in a namespace (time namespaces offset only
            # CLOCK_MONOTONIC and CLOCK_BOOTTIME), and stepping the host clock would disturb the
            # whole machine. libfaketime, preloaded, shifts what clock_gettime(CLOCK_REALTIME),
            # gettimeofday and time return by the offset in clock_file (re-read at most every
            # second). Monotonic clocks are left alone (a stepped wall clock does not move them
            # either), and so are stat() results (NO_FAKE_STAT): mtimes on disk stay real.
            env = dict(os.environ, LD_PRELOAD=self.c.faketime,
                       FAKETIME_TIMESTAMP_FILE=self.clock_file, FAKETIME_CACHE_DURATION="1",
                       FAKETIME_DONT_FAKE_MONOTONIC="1", NO_FAKE_STAT="1")
        with open(self.log_path, "ab") as out:
            out.write(("=== harness: start at %.3f ===\n" % time.time()).encode())
            out.flush()
            # `ip netns exec` execs the program in place: Popen's pid is the node's pid.
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        proc = self.proc
        CLEANUP.push("node %d pid %d" % (self.id, proc.pid), lambda: _kill(proc))

    def running(self):
        return self.proc is not None

    def died_unexpectedly(self):
        return self.proc is not None and self.proc.poll() is not None

    def kill9(self):
        if self.proc is not None:
            self.sample_rss()
            _kill(self.proc)
            with open(self.log_path, "ab") as out:
                out.write(("=== harness: kill -9 at %.3f ===\n" % time.time()).encode())
            self.proc = None

    def sample_rss(self):
        if self.proc is None:
            return 0
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        kib = int(line.split()[1])
                        self.max_rss_kib = max(self.max_rss_kib, kib)
                        return kib
        except OSError:
            pass
        return 0

    def control(self, verb, *extra, timeout=15):
        try:
            r = subprocess.run([self.c.binary, verb, "--dir", self.folder] + list(extra),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
            return r.returncode, r.stdout.decode(errors="replace")
        except subprocess.TimeoutExpired:
            return -1, "timeout"

    def status(self):
        if not self.running():
            return None
        rc, out = self.control("status", timeout=5)
        if rc != 0:
            return None
        try:
            return json.loads(out)
        except ValueError:
            return None

    def flush(self, timeout_ms, all_members=False):
        extra = ["--timeout-ms", str(timeout_ms)] + (["--all"] if all_members else [])
        rc, _ = self.control("flush", *extra, timeout=timeout_ms / 1000.0 + 10)
        return rc == 0


def _kill(proc):
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


# ---------------------------------------------------------------------------------------------
# Modification times of the final tree (the digests are checker.tree_digest)
# ---------------------------------------------------------------------------------------------
def file_mtimes(root, paths):
    """path -> st_mtime_ns of the regular files in `paths` (those that vanished are left out)."""
    out = {}
    for rel in paths:
        try:
            st = os.lstat(os.path.join(root, rel))
            out[rel] = st.st_mtime_ns
        except OSError:
            pass
    return out


# ---------------------------------------------------------------------------------------------
# One seed
# ---------------------------------------------------------------------------------------------
class Cluster:
    def __init__(self, args, seed, hosts):
        self.args = args
        self.seed = seed
        self.rng = random.Random(seed)
        self.n = args.nodes
        # Members are ids first_id.. (default 2, 3, 4): id 1, lower than every member, is free for
        # the forged non-member peer (the transport only accepts connections dialed by lower ids).
        self.ids = list(range(args.first_id, args.first_id + self.n))
        self.hosts = hosts
        self.snapshot_entries = args.snapshot_entries
        self.base = tempfile.mkdtemp(prefix="raftsync-chaos-%d-" % seed)
        base = self.base
        self.keep = args.keep
        CLEANUP.push("temp dir " + base, self._remove_base)
        # A private copy of the program: a rebuild of the original while we run (the linker
        # rewriting it) must not make a restart or a control command fail.
        self.binary = os.path.join(self.base, "raftsync")
        shutil.copy2(args.binary, self.binary)
        self.peer_binary = ""
        if args.peer_binary:
            self.peer_binary = os.path.join(self.base, "chaos_peer")
            shutil.copy2(args.peer_binary, self.peer_binary)
        self.secret = os.path.join(self.base, "secret")
        with open(self.secret, "w") as f:
            f.write("chaos-cluster-secret-%d-0123456789\n" % seed)
        self.nodes = {i: Node(self, i) for i in self.ids}
        self.faults = [f for f in args.faults.split(",") if f]
        self.faketime = None
        if "clock" in self.faults:
            self.faketime = next((p for p in FAKETIME_LIBRARIES if os.path.exists(p)), None)
            if self.faketime is None:
                log("clock fault needs libfaketime (apt-get install faketime): SKIPPED")
                self.faults.remove("clock")
        if not hosts.netns:
            self.faults = [f for f in self.faults
                           if f in ("kill", "diskfull", "wipe", "replace", "clock")]
        self.tmpfs_node = None
        if "diskfull" in self.faults:
            self.tmpfs_node = self.rng.choice(self.ids)
        for i, node in self.nodes.items():
            os.makedirs(node.root)
            if i == self.tmpfs_node:
                run(["mount", "-t", "tmpfs", "-o", "size=%dm" % args.tmpfs_mib, "tmpfs", node.root])
                root = node.root
                CLEANUP.push("tmpfs " + root, lambda: run(["umount", "-l", root], check=False))
                node.tmpfs = True
            os.makedirs(node.folder)
        # workload record
        self.ops = []          # dicts: seq, node, path, state (sha256 or None), t, acked
        self.op_seq = 0
        self.file_counter = 0
        self.fault_counts = {}
        self.full_node = None  # node whose disk is currently full (no writes to it)
        self.converge_times = []
        self.failures = []
        self.fault_log = []
        self.refused = 0
        self.clock_skews = []     # (node, offset seconds) of every clock fault
        self.emptied_at = {}      # node id -> times its folder and state were emptied
        self.clock_verified = 0   # clock faults whose effect was seen in the node's log
        self.forge_figures = {}
        self.last_op = {}         # path -> (node, monotonic time) of the last op issued on it

    def _remove_base(self):
        if self.keep:
            log("kept %s (node logs, ops.json, faults.log)" % self.base)
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    # --- helpers ---
    def leader(self):
        for node in self.nodes.values():
            st = node.status()
            if st and st.get("role") == "leader":
                return node.id
        return 0

    def check_alive(self):
        for node in self.nodes.values():
            if node.died_unexpectedly():
                self.failures.append("node %d died on its own (exit %s); see %s" %
                                     (node.id, node.proc.returncode, node.log_path))
                node.proc = None
            node.sample_rss()

    # --- workload ---
    def local_files(self, node):
        files = []
        for dirpath, dirnames, filenames in os.walk(node.folder):
            if dirpath == node.folder:
                dirnames[:] = [d for d in dirnames if d != ".raftsync"]
            # Never into internal directories: the workload once modified a file of a snapshot's
            # staging tree, which the install then moved into place (seed 30, 8 minutes).
            dirnames[:] = [d for d in dirnames if not d.startswith(".raftsync-tmp-")]
            for name in filenames:
                if name.startswith(".raftsync-tmp-") or ".conflict-" in name:
                    continue
                files.append(os.path.relpath(os.path.join(dirpath, name), node.folder))
        return sorted(files)

    def record(self, node, path, state):
        self.last_op[path] = (node.id, time.monotonic())
        self.op_seq += 1
        self.ops.append({"seq": self.op_seq, "node": node.id, "path": path, "state": state,
                         "t": time.monotonic(), "acked": False})

    def new_path(self):
        rng = self.rng
        depth = rng.randint(0, 3)
        parts = ["d%d" % rng.randint(0, 3) for _ in range(depth)]
        self.file_counter += 1
        parts.append("f%d.%s" % (self.file_counter, rng.choice(["txt", "bin", "md"])))
        return os.path.join(*parts)

    def content(self):
        rng = self.rng
        large = sum(1 for o in self.last_states().values() if o and o[1] > 512 * 1024)
        if rng.random() < 0.04 and large < self.args.max_large:
            size = rng.randint(1 << 20, 3 << 20)
        else:
            size = rng.randint(0, 4096)
        header = ("seed %d op %d\n" % (self.seed, self.op_seq + 1)).encode()
        return header + rng.randbytes(max(0, size - len(header)))

    def last_states(self):
        """path -> (state, size) of the last op issued on it (sizes kept for the large cap)."""
        out = {}
        for o in self.ops:
            out[o["path"]] = (o["state"], o.get("size", 0)) if o["state"] else None
        return out

    def write(self, node, rel, data):
        full = os.path.join(node.folder, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        self.record(node, rel, hashlib.sha256(data).hexdigest())
        self.ops[-1]["size"] = len(data)

    def bulk_import(self, count):
        """`count` new small files in nested directories of 100, written as fast as Python can into
        one node (a `git clone`, a `tar xf`); acknowledged by that node's next successful flush."""
        node = self.nodes[self.rng.choice(sorted(self.nodes))]
        for i in range(count):
            rel = os.path.join("bulk", "b%d" % (i // 1000), "c%d" % (i // 100 % 10), "g%d.txt" % i)
            self.write(node, rel, ("bulk seed %d file %d\n" % (self.seed, i)).encode() +
                       self.rng.randbytes(self.rng.randint(0, 2048)))
        log("  bulk import: %d files written into node %d" % (count, node.id))

    def workload_batch(self):
        rng = self.rng
        writers = [int(w) for w in self.args.writers.split(",") if w] or list(self.nodes)
        candidates = [i for i in writers if i != self.full_node] or [
            i for i in self.nodes if i != self.full_node]
        node = self.nodes[rng.choice(candidates)]
        for _ in range(rng.randint(1, 4)):
            files = self.local_files(node)
            r = rng.random()
            try:
                if r < 0.35 or not files:
                    self.write(node, self.new_path(), self.content())
                elif r < 0.65:
                    quiet = self.args.remote_quiet_ms / 1000.0
                    if quiet > 0:
                        # bug 7: a rewrite racing the apply of another node's write of the same
                        # path can vanish; with --remote-quiet-ms such paths are left alone
                        now = time.monotonic()
                        files = [f for f in files if f not in self.last_op or
                                 self.last_op[f][0] == node.id or
                                 now - self.last_op[f][1] >= quiet] or files
                    rel = rng.choice(files)
                    self.write(node, rel, self.content())
                elif r < 0.8 and self.args.renames:
                    src = rng.choice(files)
                    dst = self.new_path()
                    full_dst = os.path.join(node.folder, dst)
                    os.makedirs(os.path.dirname(full_dst), exist_ok=True)
                    with open(os.path.join(node.folder, src), "rb") as f:
                        data = f.read()
                    os.rename(os.path.join(node.folder, src), full_dst)
                    self.record(node, src, None)
                    self.record(node, dst, hashlib.sha256(data).hexdigest())
                    self.ops[-1]["size"] = len(data)
                else:
                    rel = rng.choice(files)
                    with open(os.path.join(node.folder, rel), "rb") as f:
                        gone = hashlib.sha256(f.read()).hexdigest()
                    os.unlink(os.path.join(node.folder, rel))
                    self.record(node, rel, None)
                    self.ops[-1]["deleted"] = gone  # which file (by its unique content) it deleted
            except FileNotFoundError:
                # The node's applier replaced/removed the file under us: not an op.
                continue
            except OSError as e:
                # Refused before any effect (for example a path component that the node's
                # applier just turned into a file, or a full disk): not an op, but counted.
                self.refused += 1
                if self.refused <= 5:
                    log("  op on node %d refused: %r" % (node.id, e))
                continue
        if node.running():
            t0 = time.monotonic()
            if node.flush(3000):
                for o in self.ops:
                    if (o["node"] == node.id and not o["acked"] and o["t"] < t0 and
                            not o.get("discarded")):
                        o["acked"] = True

    # --- faults ---
    def heal_all(self):
        for node in self.nodes.values():
            node.set_clock_offset(0)
        if self.hosts.netns:
            for i in self.nodes:
                self.hosts.link(i, True)
                self.hosts.clear_nft(i)

    def inject(self, kind, duration):
        rng = self.rng
        leader = self.leader()
        # the leader is the target half of the time (when one is known)
        target = leader if (leader and rng.random() < 0.5) else rng.choice(self.ids)
        if kind == "diskfull":
            target = self.tmpfs_node
        self.fault_counts[kind] = self.fault_counts.get(kind, 0) + 1
        log("fault %s on node %d (leader %d) for %.1fs" % (kind, target, leader, duration))
        self.fault_log.append("%.3f %s node %d duration %.1f" % (time.monotonic(), kind, target,
                                                                duration))
        node = self.nodes[target]
        if kind == "kill":
            node.kill9()
            return lambda: node.start()
        if kind == "wipe":
            node.kill9()
            self.empty_folder(node)
            node.start()
            return lambda: None
        if kind == "replace":
            self.replace(node)
            return lambda: None
        if kind == "partition":
            self.hosts.link(target, False)
            return lambda: self.hosts.link(target, True)
        if kind == "asym":
            other = rng.choice([j for j in self.nodes if j != target])
            log("  node %d drops packets from node %d" % (target, other))
            self.hosts.drop_from(target, other)
            return lambda: self.hosts.clear_nft(target)
        if kind == "loss":
            pct = rng.randint(10, 40)
            log("  %d%% loss both ways" % pct)
            self.hosts.loss(target, pct)
            return lambda: self.hosts.clear_nft(target)
        if kind == "diskfull":
            full = self.nodes[self.tmpfs_node]
            self.full_node = full.id
            ballast = os.path.join(full.root, "ballast")
            log("  filling the tmpfs of node %d" % full.id)
            try:
                with open(ballast, "wb") as f:
                    while True:
                        f.write(b"\0" * (1 << 20))
            except OSError:
                pass

            def free():
                os.unlink(ballast)
                self.full_node = None
            return free
        if kind == "clock":
            # A step of the node's wall clock, forward or back, by minutes to a year, then back to
            # the right time when the fault heals (a second step). Odd offsets (not whole days)
            # so the node's log, which prints H:M:S, shows the skew.
            sign = rng.choice([1, -1])
            offset = sign * rng.choice([rng.randint(61, 900), rng.randint(3601, 7 * 3600),
                                        rng.randint(1, 365) * 86400 + rng.randint(61, 3600)])
            log("  wall clock of node %d stepped by %+d s" % (target, offset))
            node.set_clock_offset(offset)
            self.clock_skews.append((target, offset))

            def restore():
                self.verify_clock(node, offset)
                node.set_clock_offset(0)
            return restore
        raise ValueError(kind)

    def empty_folder(self, node):
        # Changes made on the node and not acknowledged yet are destroyed with its disk: a flush
        # on the new, empty node must not acknowledge them.
        for o in self.ops:
            if o["node"] == node.id and not o["acked"]:
                o["discarded"] = True
        self.emptied_at.setdefault(node.id, []).append(time.monotonic())
        for name in os.listdir(node.folder):
            p = os.path.join(node.folder, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)

    def membership(self, verb, member, target, present):
        """One step of a membership change on the current leader (not `target`): True once the
        leader's status lists `target` among its peers (present) or no longer does."""
        leader = self.leader()
        if not leader or leader == target:
            return False
        st = self.nodes[leader].status()
        if st is None:
            return False
        if any(p.get("id") == target for p in st.get("peers", [])) == present:
            return True
        self.nodes[leader].control(verb, "--node", member, timeout=5)
        return False

    def replace(self, node):
        """The documented safe way to give a node a new empty disk: kill it, `remove-node` on the
        leader, empty its folder and state, start it with `--join`, `add-node` on the leader."""
        node.kill9()
        if not wait_until(lambda: self.membership("remove-node", str(node.id), node.id, False),
                          30, 0.3):
            self.failures.append("replace: node %d was not removed within 30 s" % node.id)
            node.start()
            return
        self.empty_folder(node)
        node.start(join=True)
        member = "%d=%s" % (node.id, self.hosts.address(node.id))
        if not wait_until(lambda: self.membership("add-node", member, node.id, True), 30, 0.3):
            self.failures.append("replace: node %d was not added back within 30 s" % node.id)
            return
        log("  node %d removed, emptied, restarted with --join and added back" % node.id)

    def poke(self, target, payload=b"\xff\xff\xff\xff\x01\x01"):
        """Sends a malformed frame to a node from another host: the node logs the refusal."""
        host, port = self.hosts.address(target).split(":")
        code = ("import socket,sys\n"
                "s=socket.create_connection((%r,%s),timeout=5)\n"
                "s.sendall(sys.stdin.buffer.read())\n"
                "try:\n s.settimeout(2)\n s.recv(4096)\nexcept OSError:\n pass\n"
                "s.close()\n" % (host, port))
        sender = next(i for i in self.ids if i != target)
        return subprocess.run(self.hosts.prefix(sender) + [sys.executable, "-c", code],
                              input=payload, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=30).returncode

    def verify_clock(self, node, offset):
        """Proves that the node's CLOCK_REALTIME really moved: makes it log a line (a bad frame)
        and compares the line's H:M:S with the real time (mod one day). libfaketime reads the
        offset file at most once a second (FAKETIME_CACHE_DURATION), so a line logged in that
        second may still show the previous offset (seed 49 once): the node is poked again, every
        half second for 10 s, until a line shows the new offset."""
        if not node.running():
            return
        with open(node.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            mark = f.tell()
        skews = []

        def skew_of(line, real):
            parts = line.split(" ", 1)[0].split(":")
            try:
                seen = int(parts[0]) * 3600 + int(parts[1]) * 60 + float(parts[2])
            except (ValueError, IndexError):
                return None
            skew = (seen - real % 86400 - offset) % 86400
            return min(skew, 86400 - skew)

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and node.running():
            real = time.time()
            self.poke(node.id)

            def logged():
                nonlocal mark
                with open(node.log_path, "rb") as f:
                    f.seek(mark)
                    data = f.read()
                mark += len(data)
                return [l for l in data.decode(errors="replace").splitlines() if "frame" in l]
            lines = wait_until(logged, 2, 0.1) or []
            found = [k for k in (skew_of(l, real) for l in lines) if k is not None]
            skews += found
            if any(k < 5 for k in found):
                self.clock_verified += 1
                log("  clock of node %d verified: its log shows the real time %+d s" %
                    (node.id, offset))
                return
            time.sleep(0.5)  # pacing of the pokes (the condition is the loop's)
        if not skews:
            log("  clock of node %d: no log line to compare" % node.id)
            return
        self.failures.append("clock of node %d did not move by %+d s (log off by %.0f s)" %
                             (node.id, offset, min(skews)))

    # --- hostile inputs ---
    def hostile(self):
        target = self.rng.choice(self.ids)
        host, port = self.hosts.address(target).split(":")
        sender = self.ids[0] if target != self.ids[0] else self.ids[1]
        rnd = self.rng.randbytes(65536)
        payloads = {
            "random bytes": rnd,
            "oversized length prefix": struct.pack("<IBB", 0xFFFFFFF0, 1, 16) + b"\0" * 64,
            "oversized authenticated-size frame": struct.pack("<IBB", 64 << 20, 1, 1) + rnd,
            "forged handshake (wrong secret)":
                struct.pack("<IBB", 58, 1, 16) + struct.pack("<QQQ", 0, 1, target)
                + self.rng.randbytes(32) + struct.pack("<IBB", 34, 1, 18) + self.rng.randbytes(32),
            "bad version": struct.pack("<IBB", 10, 7, 16) + b"\0" * 8,
        }
        code = ("import socket,sys\n"
                "d=sys.stdin.buffer.read()\n"
                "s=socket.create_connection((%r,%s),timeout=5)\n"
                "try:\n s.sendall(d)\n s.settimeout(2)\n s.recv(4096)\nexcept OSError:\n pass\n"
                "s.close()\n" % (host, port))
        prefix = self.hosts.prefix(sender)
        for name, data in payloads.items():
            r = subprocess.run(prefix + [sys.executable, "-c", code], input=data,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
            log("hostile: %s -> node %d (client exit %d)" % (name, target, r.returncode))
        self.check_alive()
        # the cluster must still serve: a write on some node reaches every node
        writer = self.nodes[self.rng.choice(self.ids)]
        self.write(writer, os.path.join("hostile", "after-%d.txt" % self.seed), self.content())
        path, state = self.ops[-1]["path"], self.ops[-1]["state"]

        def everywhere():
            for node in self.nodes.values():
                d = tree_digest(node.folder)
                if content_of(d.get(path)) != state:
                    return False
            return True
        if not wait_until(everywhere, 30, 0.2):
            self.failures.append("after hostile inputs a write on node %d did not replicate" %
                                 writer.id)
        else:
            log("hostile: cluster still serving (write on node %d replicated)" % writer.id)

    # --- forged peers (tests/chaos/chaos_peer.cpp) ---
    def transfer_leader(self, to, timeout=20):
        """Moves leadership to node `to` (asking the current leader); True once `to` leads."""
        def done():
            leader = self.leader()
            if leader == to:
                return True
            if leader:
                self.nodes[leader].control("transfer-leader", "--node", str(to), timeout=5)
            return False
        return wait_until(done, timeout, 0.5) is not None

    def peer_tool(self, mode, prefix, ident, peers, seconds, *extra):
        """Runs chaos_peer; returns (summary dict or None, output)."""
        args = prefix + [self.peer_binary, mode, "--id", str(ident),
                         "--secret-file", self.secret, "--seconds", str(seconds)]
        for j in peers:
            args += ["--peer", "%d=%s" % (j, self.hosts.address(j))]
        args += list(extra)
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=seconds + 60)
        out = r.stdout.decode(errors="replace")
        with open(os.path.join(self.base, "chaos_peer.log"), "a") as f:
            f.write("$ %s\n%s\n" % (" ".join(args), out))
        summary = None
        for line in out.splitlines():
            if line.startswith("CHAOS_PEER "):
                summary = json.loads(line[len("CHAOS_PEER "):])
        if r.returncode != 0 or summary is None:
            self.failures.append("chaos_peer %s failed (exit %d):\n%s" %
                                 (mode, r.returncode, out[-2000:]))
        return summary, out

    def log_marks(self):
        marks = {}
        for node in self.nodes.values():
            try:
                marks[node.id] = os.path.getsize(node.log_path)
            except OSError:
                marks[node.id] = 0
        return marks

    def log_since(self, node_id, marks):
        with open(self.nodes[node_id].log_path, "rb") as f:
            f.seek(marks.get(node_id, 0))
            return f.read().decode(errors="replace")

    def forge(self):
        """A peer that knows the cluster secret: (a) replays captured Raft messages with stale
        terms, as a member whose process is down and as a non-member; (b) forwards proposals whose
        folder command carries a hostile path. Each must be refused with no file outside any
        root, no crash, the cluster still serving writes and the refusal logged."""
        if len(self.ids) < 3:
            log("forge: needs 3 nodes, skipped")
            return
        low, mid, high = self.ids[0], self.ids[1], self.ids[-1]
        others = [i for i in self.ids if i != low]
        tag = "s%d" % self.seed
        outside = os.path.join(self.base, "outside")
        os.makedirs(outside, exist_ok=True)
        before_outside = set(os.listdir(outside))
        sentinels = ["chaos-sentinel-%s%s.txt" % (tag, k) for k in "mno"]
        for node in self.nodes.values():  # "../chaos-sentinel-<tag>.txt" seen from each folder
            for name in sentinels:
                with open(os.path.join(node.root, name), "w") as f:
                    f.write("sentinel\n")
        # A symlink inside the folder that points outside the root (replicated as a link), and a
        # file the hostile renames try to move out.
        link = "forge-escape-link"
        os.symlink(outside, os.path.join(self.nodes[low].folder, link))
        existing = os.path.join("forge", "existing-%s.txt" % tag)
        self.write(self.nodes[low], existing, self.content())
        existing_state = self.ops[-1]["state"]
        self.nodes[low].flush(5000)

        def link_everywhere():
            return all(tree_digest(n.folder).get(link, "").endswith(" link " + outside) and
                       content_of(tree_digest(n.folder).get(existing)) == existing_state
                       for n in self.nodes.values())
        if not wait_until(link_everywhere, 30, 0.2):
            self.failures.append("forge: the escape symlink / existing file did not replicate")
            return
        self.ops[-1]["acked"] = True

        # (a) 1. capture: a stand-in for `high` records what the others send it, while leadership
        # moves to `low` (so `low` sends it a vote request, then appends and heartbeats).
        if self.leader() == low and not self.transfer_leader(mid):
            self.failures.append("forge: leadership did not move to node %d" % mid)
            return
        capture = os.path.join(self.base, "captured.bin")
        self.nodes[high].kill9()
        host_high = self.hosts.host(high)
        listen = "%s:%s" % (host_high, self.hosts.address(high).rsplit(":", 1)[1])
        proc = subprocess.Popen(
            self.hosts.prefix(high) + [self.peer_binary, "capture", "--id", str(high),
                                       "--listen", listen, "--secret-file", self.secret,
                                       "--seconds", "6", "--out", capture] +
            sum([["--peer", "%d=%s" % (j, self.hosts.address(j))] for j in self.ids
                 if j != high], []),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        CLEANUP.push("chaos_peer capture pid %d" % proc.pid, lambda: _kill(proc))
        # chaos_peer creates <out>.ready once every member has authenticated to it
        if not wait_until(lambda: os.path.exists(capture + ".ready"), 8, 0.05):
            log("forge: the members did not all reach the stand-in; capturing anyway")
        moved = self.transfer_leader(low, timeout=3)
        for k in range(6):  # appends with real entries
            self.write(self.nodes[self.rng.choice([low, mid])],
                       os.path.join("forge", "during-capture-%s-%d.txt" % (tag, k)),
                       self.content())
        out = proc.communicate(timeout=60)[0].decode(errors="replace")
        with open(os.path.join(self.base, "chaos_peer.log"), "a") as f:
            f.write("$ capture\n%s\n" % out)
        summary = next((json.loads(l[len("CHAOS_PEER "):]) for l in out.splitlines()
                        if l.startswith("CHAOS_PEER ")), None)
        self.nodes[high].start()
        if summary is None or not moved:
            self.failures.append("forge: capture failed (leadership to %d: %s):\n%s" %
                                 (low, moved, out[-2000:]))
            return
        from_low = summary["peers"].get(str(low), {}).get("received", {})
        log("forge: captured %d messages; from node %d: %s" %
            (summary["captured"], low, ", ".join("%s %d (terms %d-%d)" %
                                                 (t, v["count"], v["term_min"], v["term_max"])
                                                 for t, v in sorted(from_low.items()))))
        if not wait_until(lambda: all(n.status() for n in self.nodes.values()), 30, 0.2):
            self.failures.append("forge: node %d did not come back after the capture" % high)
            return
        # 2. newer terms: leadership moves on twice, so every captured message is stale.
        if not self.transfer_leader(mid) or not self.transfer_leader(high):
            self.failures.append("forge: leadership did not move after the capture")
            return
        stale_max = max([v["term_max"] for v in from_low.values()] + [0])
        # 3. replay as `low` (its process down) and as the non-member 1.
        self.nodes[low].kill9()
        marks = self.log_marks()
        before = {i: self.nodes[i].status() for i in others}
        replay_low, _ = self.peer_tool("replay", self.hosts.prefix(low), low, others, 3,
                                       "--in", capture)
        replay_out, _ = self.peer_tool("replay", self.hosts.outsider_prefix(), 1, others, 3,
                                       "--in", capture, "--rewrite-from")
        after = {i: self.nodes[i].status() for i in others}
        self.forge_figures = {"captured": summary["captured"], "stale_term_max": stale_max}
        for name, rep_summary in (("as member %d" % low, replay_low),
                                  ("as non-member 1", replay_out)):
            if rep_summary is None:
                continue
            sent = sum(v["count"] for p in rep_summary["peers"].values()
                       for v in p["sent"].values())
            granted = sum(p["received"].get("vote_response", {}).get("count", 0) -
                          p["received"].get("vote_response", {}).get("rejected", 0)
                          for p in rep_summary["peers"].values())
            answers = {t: v for p in rep_summary["peers"].values()
                       for t, v in p["received"].items()}
            unauth = [i for i, p in rep_summary["peers"].items() if not p["authenticated"]]
            log("forge: replay %s: %d stale messages sent; answers %s" %
                (name, sent, ", ".join("%s term %d" % (t, v["term_max"])
                                       for t, v in sorted(answers.items())) or "none"))
            self.forge_figures["replayed_" + name.split()[1]] = sent
            if unauth:
                self.failures.append("forge: replay %s did not authenticate to %s" %
                                     (name, unauth))
            if sent == 0:
                self.failures.append("forge: replay %s sent nothing" % name)
            if granted:
                self.failures.append("forge: a stale vote request %s was granted" % name)
            for t, v in answers.items():
                if t in ("append_response", "heartbeat_response") and v["term_max"] <= stale_max:
                    self.failures.append("forge: %s answered %s with the stale term %d" %
                                         (t, name, v["term_max"]))
        for i in others:
            b, a = before.get(i), after.get(i)
            if not a:
                self.failures.append("forge: node %d stopped answering after the replay" % i)
            elif b and (a["term"] != b["term"] or a["leader"] != b["leader"]):
                self.failures.append("forge: replayed stale messages moved node %d from term %s "
                                     "leader %s to term %s leader %s" %
                                     (i, b["term"], b["leader"], a["term"], a["leader"]))
            elif b and "stale_messages" in a:
                # The node counts what it dropped, so an operator sees a replaying peer.
                seen = a["stale_messages"] - b.get("stale_messages", 0)
                self.forge_figures.setdefault("stale_counted", {})[str(i)] = seen
                if seen <= 0:
                    self.failures.append("forge: node %d's status shows no stale message "
                                         "dropped after the replay" % i)
        # (b) forwarded proposals with hostile paths, as `low` (down) and as the non-member 1,
        # sent to every running member (followers forward them to the leader).
        common = ["--escape-link", link, "--existing", existing]
        # m: as `low`, in its own name, with sequence numbers from 2^62 (above any real one, so the
        # commands are not taken for duplicates): committed, then refused by every node's path
        # rules at apply time. They must not silence `low` either (bug 4): checked below.
        _, out_low = self.peer_tool(
            "propose", self.hosts.prefix(low), low, others, 2, "--tag", tag + "m", "--origin",
            str(low), "--sequence-base", str(1 << 62), "--abs-path",
            os.path.join(outside, "chaos-absolute-%sm.txt" % tag), *common)
        # n: as the non-member 1; o: as `low` but in `mid`'s name. Both refused when they arrive
        # (the node they are sent to logs "proposal forwarded by node N refused").
        self.peer_tool(
            "propose", self.hosts.outsider_prefix(), 1, others, 2, "--tag", tag + "n", "--origin",
            "1", "--sequence-base", "1", "--abs-path",
            os.path.join(outside, "chaos-absolute-%sn.txt" % tag), *common)
        self.peer_tool(
            "propose", self.hosts.prefix(low), low, others, 2, "--tag", tag + "o", "--origin",
            str(mid), "--sequence-base", str(1 << 62), "--abs-path",
            os.path.join(outside, "chaos-absolute-%so.txt" % tag), *common)
        commands = [l for l in out_low.splitlines() if l.startswith("CHAOS_PEER_COMMAND ")]
        self.nodes[low].start()
        expected = len(commands)

        def refusals(i):
            """(apply-time refusals of the m commands, refused forwarded proposals)"""
            lines = self.log_since(i, marks).splitlines()
            applied = sum(1 for line in lines if "rejected #" in line and tag + "m" in line)
            forwarded = sum(1 for line in lines if "proposal forwarded by node" in line and
                            "refused" in line)
            return applied, forwarded

        def all_refused():
            # every node (the restarted one too) refuses every m command when applying it; each
            # node the n and o proposals were sent to refuses each of them on arrival
            return all(refusals(i)[0] >= expected and
                       (i == low or refusals(i)[1] >= 2 * expected) for i in self.ids)
        if not wait_until(all_refused, 30, 0.3):
            for i in self.ids:
                applied, forwarded = refusals(i)
                self.failures.append(
                    "forge: node %d logged %d of %d apply-time refusals and %d of %d refused "
                    "forwarded proposals" % (i, applied, expected, forwarded,
                                             0 if i == low else 2 * expected))
        else:
            sample = [line for line in self.log_since(high, marks).splitlines()
                      if "rejected #" in line or "proposal forwarded" in line][:3]
            log("forge: every node refused the %d hostile commands, e.g. %s" % (expected, sample))
        self.forge_figures["hostile_proposals"] = 3 * expected
        # bug 4: the refused commands in low's name with huge sequence numbers must not make its
        # later changes look like duplicates
        self.after_forged_origin(tag, low)
        # nothing outside any root, no file with a hostile name anywhere, sentinels intact, the
        # existing file unmoved
        leaked = []
        for dirpath, dirnames, filenames in os.walk(self.base):
            for name in dirnames + filenames:
                if name.startswith("chaos-sentinel-"):
                    continue
                if ("chaos-" in name and any(tag + k in name for k in "mno")) or \
                        name.startswith("chaos-nul"):
                    leaked.append(os.path.join(dirpath, name))
        leaked += [os.path.join(outside, x) for x in set(os.listdir(outside)) - before_outside]
        for node in self.nodes.values():
            for name in sentinels:
                if not os.path.exists(os.path.join(node.root, name)):
                    leaked.append("removed " + os.path.join(node.root, name))
        if leaked:
            self.failures.append("forge: hostile proposals had effects: %s" % sorted(set(leaked)))
        self.check_alive()
        log("forge: %d hostile proposals refused, nothing outside the roots; %s" %
            (self.forge_figures.get("hostile_proposals", 0),
             json.dumps(self.forge_figures, sort_keys=True)))

    def after_forged_origin(self, tag, victim):
        """A write on `victim` after refused commands in its name with sequence numbers from 2^62
        must reach every node (bug 4: they used to enter the dedupe window and silence it)."""
        if not wait_until(lambda: self.nodes[victim].status(), 30, 0.2):
            self.failures.append("forge: node %d did not come back" % victim)
            return
        path = os.path.join("forge", "after-forged-origin-%s.txt" % tag)
        self.write(self.nodes[victim], path, self.content())
        state = self.ops[-1]["state"]
        acked = self.nodes[victim].flush(10000)
        if acked:
            self.ops[-1]["acked"] = True

        def everywhere():
            return all(content_of(tree_digest(n.folder).get(path)) == state
                       for n in self.nodes.values())
        ok = wait_until(everywhere, 30, 0.2) is not None
        self.forge_figures["write_after_forged_origin_replicated"] = ok
        if not ok:
            self.failures.append(
                "forge: after refused commands in node %d's name with sequence 2^62, its own "
                "write of %s (flush %s) did not reach every node" %
                (victim, path, "ok" if acked else "failed"))

    # --- convergence + checker ---
    def wait_converged(self, timeout):
        t0 = time.monotonic()
        last = [None]

        def same():
            for node in self.nodes.values():
                if node.running():
                    node.flush(2000)
            digests = [tree_digest(n.folder) for n in self.nodes.values()]
            ok = all(d == digests[0] for d in digests)
            stable = ok and last[0] == digests[0]
            last[0] = digests[0] if ok else None
            return digests[0] if stable else None
        tree = wait_until(same, timeout, 0.3)
        return tree, time.monotonic() - t0

    def describe_difference(self):
        by_path = {}
        for node in self.nodes.values():
            for p, v in tree_digest(node.folder).items():
                by_path.setdefault(p, {})[node.id] = v
        lines = []
        for p, vals in sorted(by_path.items()):
            if len(vals) != self.n or len(set(vals.values())) != 1:
                lines.append("  %s: %s" % (p, vals))
        return lines

    def run(self):
        args = self.args
        log("seed %d: %d nodes on %s, faults %s%s, base %s" %
            (self.seed, self.n, "network namespaces" if self.hosts.netns else "LOOPBACK",
             ",".join(self.faults) or "none",
             (" (tmpfs node %d, %d MiB)" % (self.tmpfs_node, args.tmpfs_mib))
             if self.tmpfs_node else "", self.base))
        for node in self.nodes.values():
            node.start()
        for node in self.nodes.values():
            if not wait_until(lambda: node.status() is not None, 30, 0.1):
                raise RuntimeError("node %d does not answer status; log %s" %
                                   (node.id, node.log_path))
        if not wait_until(self.leader, 30, 0.1):
            raise RuntimeError("no leader elected")
        if args.bulk_files > 0:
            self.bulk_import(args.bulk_files)
        duration = args.minutes * 60.0
        t_end = time.monotonic() + duration
        next_fault = time.monotonic() + self.rng.uniform(1, 4)
        heal = None
        heal_at = 0
        last_heal = time.monotonic()
        while time.monotonic() < t_end or heal is not None:
            now = time.monotonic()
            if heal is not None and now >= heal_at:
                heal()
                heal = None
                last_heal = time.monotonic()
                next_fault = last_heal + self.rng.uniform(1, 5)
                log("  healed")
            elif heal is None and self.faults and now >= next_fault and now < t_end - 3:
                kind = self.rng.choice(self.faults)
                d = self.rng.uniform(1.5, 6)
                heal = self.inject(kind, d)
                heal_at = time.monotonic() + d
            if time.monotonic() < t_end:
                self.workload_batch()
            else:
                time.sleep(0.05)
            self.check_alive()
        self.heal_all()
        self.check_alive()
        log("chaos phase over: %d ops issued; settling" % len(self.ops))
        tree, settle = self.wait_converged(args.settle_timeout)
        since_fault = time.monotonic() - last_heal
        if tree is None:
            diff = self.describe_difference()
            statuses = ["  node %d status: %s" % (n.id, json.dumps(n.status()))
                        for n in self.nodes.values()]
            self.failures.append("trees did not converge within %ds:\n%s\n%s" %
                                 (args.settle_timeout, "\n".join(diff[:30]),
                                  "\n".join(statuses)))
            divergent = len(diff)
        else:
            divergent = 0
            log("converged %.1fs after the last fault healed" % since_fault)
        if tree is not None and args.hostile:
            self.hostile()
            tree, _ = self.wait_converged(args.settle_timeout)
            if tree is None:
                diff = self.describe_difference()
                divergent = len(diff)
                self.failures.append("trees diverged after hostile inputs:\n" + "\n".join(diff))
        if tree is not None and args.forge:
            if args.peer_binary:
                self.forge()
                self.heal_all()
                tree, _ = self.wait_converged(args.settle_timeout)
                if tree is None:
                    diff = self.describe_difference()
                    divergent = len(diff)
                    self.failures.append("trees diverged after the forged peers:\n" +
                                         "\n".join(diff[:30]))
            else:
                log("forge: no --peer-binary (tests/chaos/chaos_peer), forged peers SKIPPED")
        self.check_alive()
        checker = Checker(self.ops, self.emptied_at)
        acked, lost, via_conflict = (sum(1 for o in self.ops if o["acked"]), [], 0)
        if tree is not None:
            acked, lost, via_conflict = checker.check(tree)
            if lost:
                self.failures.append("acknowledged ops lost:\n" + "\n".join(lost[:30]))
        rss = {i: n.max_rss_kib for i, n in self.nodes.items()}
        for i, kib in rss.items():
            if kib > RSS_LIMIT_KIB:
                self.failures.append("node %d RSS %d KiB above %d KiB" % (i, kib, RSS_LIMIT_KIB))
        conflicts = sum(1 for p in (tree or {}) if ".conflict-" in p)
        # mtimes are part of the replicated state (contract point 2): compare them too
        mtime_divergent = []
        if tree is not None:
            files = [p for p, v in tree.items() if " file " in v]
            maps = [file_mtimes(n.folder, files) for n in self.nodes.values()]
            mtime_divergent = [p for p in files if len({m.get(p) for m in maps}) != 1]
            if mtime_divergent:
                self.failures.append("files whose mtime differs between nodes: %d, e.g. %s" %
                                     (len(mtime_divergent),
                                      ["%s %s" % (p, [m.get(p) for m in maps])
                                       for p in mtime_divergent[:5]]))
        figures = {
            "seed": self.seed, "netns": self.hosts.netns, "minutes": args.minutes,
            "faults": self.fault_counts, "ops_issued": len(self.ops), "ops_acked": acked,
            "ops_refused_by_os": self.refused, "ops_lost": len(lost), "acked_kept_in_conflict_copy": via_conflict,
            "acked_delete_undone_by_concurrent_write": checker.delete_overridden,
            "acked_write_moved_by_concurrent_rename": checker.moved,
            "acked_write_removed_or_moved_by_concurrent_op_on_same_file": checker.deleted_later,
            "acked_op_followed_concurrent_rename": checker.followed,
            "divergent_files": divergent, "conflict_copies": conflicts,
            "mtime_divergent_files": len(mtime_divergent),
            "files_final": sum(1 for v in (tree or {}).values() if " file " in v),
            "converge_after_last_fault_s": round(since_fault, 1),
            "max_rss_kib": rss,
            "clock_steps": [{"node": n, "offset_s": o} for n, o in self.clock_skews],
            "clock_steps_verified": self.clock_verified,
            "forge": self.forge_figures,
        }
        log("FIGURES " + json.dumps(figures, sort_keys=True))
        with open(os.path.join(self.base, "ops.json"), "w") as f:
            for o in self.ops:
                f.write(json.dumps(o) + "\n")
        with open(os.path.join(self.base, "faults.log"), "w") as f:
            f.write("\n".join(self.fault_log) + "\n")
        # What else checker.py needs to replay the check on this run.
        with open(os.path.join(self.base, "history.json"), "w") as f:
            json.dump({"emptied_at": self.emptied_at}, f)
        return figures


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--binary", required=True, help="the raftsync node program")
    p.add_argument("--seeds", default=os.environ.get("RAFTSYNC_CHAOS_SEEDS", ""),
                   help="comma-separated seeds (default: one random seed, printed)")
    p.add_argument("--minutes", type=float, default=None,
                   help="chaos minutes per seed (default RAFTSYNC_CHAOS_MINUTES or 1)")
    p.add_argument("--minutes-per-seed", type=float, default=None, dest="minutes_per_seed")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--first-id", type=int, default=2, dest="first_id",
                   help="id of the first member (default 2: id 1 is the forged non-member)")
    p.add_argument("--faults", default=os.environ.get("RAFTSYNC_CHAOS_FAULTS", DEFAULT_FAULTS),
                   help="subset of %s (default %s)" % (ALL_FAULTS, DEFAULT_FAULTS))
    p.add_argument("--tmpfs-mib", type=int, default=128, dest="tmpfs_mib")
    p.add_argument("--max-large", type=int, default=4, dest="max_large")
    p.add_argument("--bulk-files", type=int, default=0, dest="bulk_files",
                   help="write N small files at once into one node as the faults begin (a bulk "
                        "import under faults, issue 13); each is an op like any other")
    p.add_argument("--snapshot-entries", type=int, default=10000, dest="snapshot_entries")
    p.add_argument("--settle-timeout", type=int, default=90, dest="settle_timeout")
    p.add_argument("--writers", default="", help="comma-separated node ids the workload writes "
                   "to (default: all)")
    p.add_argument("--log-level", default=os.environ.get("RAFTSYNC_CHAOS_LOG_LEVEL", "info"),
                   dest="log_level", help="the nodes' --log-level (info; debug to trace a bug)")
    p.add_argument("--no-rename", action="store_false", dest="renames",
                   help="no rename ops (RAFTSYNC_CHAOS_RENAMES=1 turns them back on)")
    p.add_argument("--remote-quiet-ms", type=int, default=0, dest="remote_quiet_ms",
                   help="rewrite a file only if no other node wrote it in the last N ms (CI: "
                        "1000, because of bug 7 in docs/reliability.md)")
    p.add_argument("--no-hostile", action="store_false", dest="hostile")
    p.add_argument("--peer-binary", default="", dest="peer_binary",
                   help="tests/chaos/chaos_peer: the forged peer (replayed messages, hostile "
                        "proposals); without it that phase is skipped")
    p.add_argument("--no-forge", action="store_false", dest="forge",
                   help="skip the forged-peer phase")
    p.add_argument("--forge-once", action="store_true", dest="forge_once",
                   help="forged-peer phase in the first seed only (CI budget)")
    p.add_argument("--no-netns", action="store_false", dest="netns")
    p.add_argument("--keep", action="store_true", help="keep the temp dirs (logs) afterwards")
    args = p.parse_args()
    # Soak settings from the environment override the command line (so the ctest entry can be
    # turned into a soak without editing it).
    if os.environ.get("RAFTSYNC_CHAOS_FAULTS") is not None:
        args.faults = os.environ["RAFTSYNC_CHAOS_FAULTS"]
    if os.environ.get("RAFTSYNC_CHAOS_MAX_LARGE"):
        args.max_large = int(os.environ["RAFTSYNC_CHAOS_MAX_LARGE"])
    if os.environ.get("RAFTSYNC_CHAOS_RENAMES"):
        args.renames = os.environ["RAFTSYNC_CHAOS_RENAMES"] != "0"
    if os.environ.get("RAFTSYNC_CHAOS_SEEDS"):
        args.seeds = os.environ["RAFTSYNC_CHAOS_SEEDS"]
    env_minutes = os.environ.get("RAFTSYNC_CHAOS_MINUTES")
    if env_minutes:
        args.minutes = float(env_minutes)
    elif args.minutes is None:
        args.minutes = args.minutes_per_seed if args.minutes_per_seed is not None else 1.0
    seeds = [int(s) for s in args.seeds.split(",") if s] or [random.SystemRandom().randint(1, 10**6)]
    args.binary = os.path.abspath(args.binary)
    if args.peer_binary:
        args.peer_binary = os.path.abspath(args.peer_binary)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    log("seeds %s (replay one with RAFTSYNC_CHAOS_SEEDS=N), %.2f min each" %
        (",".join(map(str, seeds)), args.minutes))
    failed = []
    all_figures = []
    try:
        use_netns = args.netns and os.geteuid() == 0 and shutil.which("ip") is not None
        if args.netns and not use_netns:
            log("not root or no `ip`: FALLING BACK to 127.0.0.1 with distinct ports")
        for seed in seeds:
            hosts = Hosts(range(args.first_id, args.first_id + args.nodes), use_netns)
            mark = len(CLEANUP.actions)
            cluster = Cluster(args, seed, hosts)
            if args.forge_once and seed != seeds[0]:
                args.forge = False
            try:
                all_figures.append(cluster.run())
            except Exception as e:
                import traceback
                cluster.failures.append("harness error: %r\n%s" % (e, traceback.format_exc()))
            if cluster.failures:
                cluster.keep = True  # the evidence stays on disk
                failed.append(seed)
                for f in cluster.failures:
                    log("FAIL seed %d: %s" % (seed, f))
                for node in cluster.nodes.values():
                    log("--- tail of %s ---" % node.log_path)
                    try:
                        with open(node.log_path, "rb") as f:
                            tail = f.read().decode(errors="replace").splitlines()[-15:]
                        for line in tail:
                            sys.stdout.write("    " + line + "\n")
                    except OSError:
                        pass
            else:
                log("PASS seed %d" % seed)
            # tear down this seed's processes, mounts, dirs and namespaces before the next
            while len(CLEANUP.actions) > mark:
                d, fn = CLEANUP.actions.pop()
                try:
                    fn()
                except Exception as e:
                    log("cleanup '%s' failed: %s" % (d, e))
            CLEANUP.run()
    finally:
        CLEANUP.run()
    total_acked = sum(f["ops_acked"] for f in all_figures)
    total_lost = sum(f["ops_lost"] for f in all_figures)
    faults = {}
    for f in all_figures:
        for kind, count in f["faults"].items():
            faults[kind] = faults.get(kind, 0) + count
    conv = sorted(f["converge_after_last_fault_s"] for f in all_figures)
    log("TOTAL seeds %d, failed %s, faults %s, ops acked %d, ops lost %d, divergent files %d, "
        "convergence after the last fault p50 %s s max %s s" %
        (len(seeds), failed or "none", json.dumps(faults, sort_keys=True), total_acked,
         total_lost, sum(f["divergent_files"] for f in all_figures),
         conv[len(conv) // 2] if conv else "-", conv[-1] if conv else "-"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
