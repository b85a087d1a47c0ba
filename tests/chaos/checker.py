#!/usr/bin/env python3
"""The chaos harness's checker (tests/chaos/chaos.py): after the faults stop and every replica is
identical, was any acknowledged op lost?

An acknowledged op is kept when the final tree holds its content (or that of a later op on the same
path), or when the product's documented policy for concurrent changes explains the difference
(docs/folder.md, "Concurrent changes"; docs/reliability.md, "Checker"): a write kept as a conflict
copy, a delete undone by a concurrent modification, a change carried along by a concurrent rename,
a renamed file deleted under its old name by a node that had not seen the rename. "Concurrent" is
what a node may not have applied when it issued its op: an op of another node within
CONCURRENT_S, or anything before a node was emptied (its replacement replays the whole log).

Each op is a dict: seq, node, path, state (sha256 of the content written, None for a delete or a
rename's source), t (time.monotonic() when issued), acked; a delete records which content it
removed in "deleted"; a rename is its source op immediately followed by its destination op.

Replay the check on a run kept with --keep (or after a failure):
  checker.py /tmp/raftsync-chaos-SEED-XXXX
checker_test.py holds its unit tests.
"""

import hashlib
import json
import os
import sys


def tree_digest(root):
    """path -> "MODE file SHA256" / "MODE dir" / "MODE link TARGET" for every entry under `root`
    (paths relative, never following symlinks; the state dir and internal temp entries skipped)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != ".raftsync"]
        # Internal directories (a snapshot's staging tree) are neither listed nor entered.
        dirnames[:] = [d for d in dirnames if not d.startswith(".raftsync-tmp-")]
        for name in dirnames + filenames:
            if name.startswith(".raftsync-tmp-"):
                continue
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            try:
                st = os.lstat(full)
                mode = st.st_mode & 0o7777
                if os.path.islink(full):
                    out[rel] = "%o link %s" % (mode, os.readlink(full))
                elif os.path.isdir(full):
                    out[rel] = "%o dir" % mode
                else:
                    with open(full, "rb") as f:
                        out[rel] = "%o file %s" % (mode, hashlib.sha256(f.read()).hexdigest())
            except OSError:
                out[rel] = "vanished"
    return out


def content_of(entry):
    """The sha256 of a digest entry if it is a regular file, else None."""
    if entry and " file " in entry:
        return entry.split(" file ", 1)[1]
    return None


def is_conflict_copy(path, original):
    d, name = os.path.split(original)
    stem, ext = os.path.splitext(name)
    pd, pname = os.path.split(path)
    return pd == d and pname.startswith(stem + ".conflict-") and pname.endswith(ext)


class Checker:
    """check(tree) -> (acknowledged ops, lines naming each lost one, ops kept in conflict copies);
    the other explained outcomes are counted in the attributes set by __init__."""

    def __init__(self, ops, emptied_at):
        self.ops = ops                # in issue order
        self.emptied_at = emptied_at  # node id -> times its folder and state were emptied
        self.delete_overridden = 0    # acknowledged deletes undone by a concurrent write
        self.moved = 0                # acknowledged writes whose content a rename moved
        self.deleted_later = 0        # removed or moved by a concurrent op on the same file
        self.followed = 0             # acknowledged ops that followed a concurrent rename

    def check(self, tree):
        self.delete_overridden = self.moved = self.deleted_later = self.followed = 0
        by_path = {}
        for o in self.ops:
            by_path.setdefault(o["path"], []).append(o)
        acked = sum(1 for o in self.ops if o["acked"])
        lost = []
        via_conflict = 0
        everywhere = {content_of(v) for v in tree.values()}
        # renames: a rename is recorded as its source (state None, no "deleted") immediately
        # followed by its destination, by the same node
        renames = []
        for a, b in zip(self.ops, self.ops[1:]):
            if (a["state"] is None and "deleted" not in a and b["seq"] == a["seq"] + 1 and
                    b["node"] == a["node"] and b["state"] is not None):
                renames.append({"src": a["path"], "dst": b["path"], "src_seq": a["seq"],
                                "dst_seq": b["seq"], "node": a["node"], "t": a["t"]})
        self.rename_of_dst = {r["dst_seq"]: r for r in renames}
        for path, ops in by_path.items():
            last_acked = None
            for o in ops:
                if o["acked"]:
                    last_acked = o
            if last_acked is None:
                continue
            allowed = {o["state"] for o in ops if o["seq"] >= last_acked["seq"]}
            final = content_of(tree.get(path))
            if tree.get(path) is not None and final is None:
                final = "non-file"
            if final in allowed:
                continue
            if last_acked["state"] is None and final is not None and \
                    self.edited_under_earlier_name(path, last_acked, final, renames, by_path):
                # The same, with the modification made under one of the file's earlier names by a
                # node that had not seen the rename: the edit followed the file here.
                self.delete_overridden += 1
                continue
            if last_acked["state"] is None and any(
                    o["state"] == final and
                    (self.maybe_unseen(o, last_acked) or self.maybe_unseen(last_acked, o))
                    for o in ops):
                # An acknowledged delete undone by a modification the harness cannot order
                # against it (made on a node that was down or cut off, or not yet applied
                # there): the product keeps modifications over concurrent deletes. A write the
                # deleting node had seen must not come back (bug 21).
                self.delete_overridden += 1
                continue
            copies = {content_of(v) for p, v in tree.items() if is_conflict_copy(p, path)}
            if any(s in copies for s in allowed if s):
                via_conflict += 1
                continue
            # Contents are unique per op (they carry the op number), so they identify a file.
            if final is None or final in allowed:
                if last_acked["state"] in everywhere:
                    # moved to another path by a concurrent rename (made on a node that had not
                    # yet seen this write): the content survives under the rename's target
                    self.moved += 1
                    continue
                h = last_acked["state"]
                if final is None and any(
                        o is not last_acked and
                        (o.get("deleted") == h or
                         (o["seq"] > last_acked["seq"] and o["state"] == h and o["path"] != path))
                        for o in self.ops):
                    # The same file (its content is unique) deleted by a concurrent op under
                    # another name (a node behind renamed a file already deleted, or deleted a
                    # file under its old name), or moved on by a later rename whose target path
                    # is checked on its own. The product lets a delete win over a concurrent
                    # rename; docs/reliability.md.
                    self.deleted_later += 1
                    continue
            if self.follows_concurrent_rename(path, last_acked, tree, renames, by_path):
                self.followed += 1
                continue
            lost.append("  %s: acked op %d (node %d, %s) final %s" %
                        (path, last_acked["seq"], last_acked["node"],
                         (last_acked["state"] or "delete")[:12], (final or "absent")[:12]))
        return acked, lost, via_conflict

    CONCURRENT_S = 15.0  # ops this close on different nodes may not have seen each other
    CATCH_UP_S = 60.0    # a node emptied this recently may still be replaying the log

    def maybe_unseen(self, earlier, op):
        """Had `op`'s node possibly not applied `earlier` when it issued `op`? For an op of another
        node: yes when they are close in time. For any op, its own node's included: yes when
        `op`'s node was emptied after `earlier` and shortly before `op`. The replacement replays
        the whole log (its predecessor's ops too), and its folder shows old states meanwhile."""
        if earlier["node"] != op["node"] and abs(earlier["t"] - op["t"]) <= self.CONCURRENT_S:
            return True
        return earlier["t"] < op["t"] and any(
            e <= op["t"] <= e + self.CATCH_UP_S and (earlier["node"] != op["node"] or
                                                     earlier["t"] < e)
            for e in self.emptied_at.get(op["node"], []))

    def edited_under_earlier_name(self, path, acked, final, renames, by_path):
        """Was `final` written under a name the file had before renames (made before `acked`)
        brought it to `path`, by an op concurrent with `acked` (one of the two nodes may not have
        applied the other's op)?"""
        names, frontier = set(), {path}
        for _ in range(10):
            found = {r["src"] for r in renames
                     if r["dst"] in frontier and r["dst_seq"] < acked["seq"]} - names - {path}
            if not found:
                break
            names |= found
            frontier = found
        return any(o["state"] == final and
                   (self.maybe_unseen(o, acked) or self.maybe_unseen(acked, o))
                   for name in names for o in by_path.get(name, []))

    def follows_concurrent_rename(self, path, acked, tree, renames, by_path):
        """The product's concurrent-changes policy moves a change along with a concurrent rename of
        the same file (docs/folder.md). Accepts the acknowledged op `acked` on `path` when:
        - a rename of `path` to Q by another node, issued before `acked` but close enough in time
          that `acked`'s node had not seen it, took `acked` along: Q's final content is `acked`'s
          or that of a later op on Q;
        - `acked` is a rename S -> path, and another node concurrently renamed S elsewhere (Q:
          the same rule on Q) or wrote S around the same time without having seen the rename
          (that write followed the file to `path`: the final content of `path` is such a
          write), or deleted S without having seen the rename (rename / delete: the delete
          wins, the file is gone under both names — `path` is absent)."""
        def final(q):
            entry = tree.get(q)
            if entry is None:
                return None
            return content_of(entry) or "non-file"

        def settled_at(q, from_seq):
            allowed = {acked["state"]} | {o["state"] for o in by_path.get(q, [])
                                          if o["seq"] >= from_seq}
            return final(q) in allowed

        source = self.rename_of_dst.get(acked["seq"])
        for r in renames:
            if not self.maybe_unseen(r, acked):
                continue
            if r["src"] == path and r["src_seq"] < acked["seq"] and settled_at(r["dst"],
                                                                                r["dst_seq"]):
                return True
            if source is not None and r is not source and r["src"] == source["src"] and \
                    settled_at(r["dst"], r["dst_seq"]):
                return True
        if source is not None:
            # The file's earlier names: this rename's source, and the sources of the renames
            # that led to it (a file renamed twice by one node while another node, down or cut
            # off, still had it under the first name).
            names = [source["src"]]
            link = source
            while True:
                before = [r for r in renames if r["dst"] == link["src"] and
                          r["dst_seq"] < link["src_seq"]]
                if not before:
                    break
                link = max(before, key=lambda r: r["dst_seq"])
                names.append(link["src"])
            # A write under any of those names by a node that had not seen the renames followed
            # the file here (seed 5: node 3, restarted, edited f1718.txt while node 4 renamed it
            # twice; the edit committed at the second target).
            later = {o["state"] for name in names for o in by_path.get(name, [])
                     if o["state"] and (self.maybe_unseen(acked, o) or
                                        self.maybe_unseen(o, acked))}
            if final(path) in later:
                return True
            # Another node that had not seen the renames deleted the file, or moved it away (a
            # rename made while it was down looks like a delete plus a new file to its startup
            # scan): the delete follows the renames (rename / delete: the delete wins). Nothing is
            # lost when that node deleted it, or when its move took the same bytes to its new
            # name (an acknowledged op of its own, checked on that path).
            by_seq = {o["seq"]: o for o in self.ops}
            for name in names:
                for o in by_path.get(name, []):
                    if o["node"] == acked["node"] or o["state"] is not None or \
                            abs(o["t"] - acked["t"]) > self.CONCURRENT_S or final(path) is not None:
                        continue
                    if "deleted" in o:
                        return True
                    moved_to = by_seq.get(o["seq"] + 1)
                    if moved_to is not None and moved_to["node"] == o["node"] and \
                            moved_to["state"] == acked["state"]:
                        return True
        return False



def main():
    if len(sys.argv) != 2:
        sys.exit("usage: checker.py RUN_DIR   (a run kept by chaos.py: ops.json, history.json, "
                 "hostN/folder)")
    base = sys.argv[1]
    with open(os.path.join(base, "ops.json")) as f:
        ops = [json.loads(line) for line in f if line.strip()]
    try:
        with open(os.path.join(base, "history.json")) as f:
            history = json.load(f)
    except FileNotFoundError:
        sys.exit("%s has no history.json (written at the end of a run since the checker moved to "
                 "checker.py)" % base)
    emptied_at = {int(k): v for k, v in history["emptied_at"].items()}
    hosts = sorted(d for d in os.listdir(base) if d.startswith("host"))
    trees = {h: tree_digest(os.path.join(base, h, "folder")) for h in hosts}
    if len({json.dumps(t, sort_keys=True) for t in trees.values()}) != 1:
        print("the replicas differ; checking each")
    failed = False
    for host, tree in trees.items():
        checker = Checker(ops, emptied_at)
        acked, lost, via_conflict = checker.check(tree)
        print("%s: %d acknowledged, %d lost, %d in conflict copies, %d followed a rename, "
              "%d moved, %d deletes undone, %d removed by a concurrent op" %
              (host, acked, len(lost), via_conflict, checker.followed, checker.moved,
               checker.delete_overridden, checker.deleted_later))
        for line in lost:
            print(line)
        failed = failed or bool(lost)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
