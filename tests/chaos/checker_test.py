#!/usr/bin/env python3
"""Unit tests of the chaos checker (checker.py) on small made-up histories: each outcome the
product's concurrent-changes policy explains is accepted, and each near miss of those rules is
still reported as a lost write, so that teaching the checker a policy cannot hide a real loss."""

import hashlib
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checker import Checker  # noqa: E402


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


class History:
    """Ops in issue order, recorded the way chaos.py records them."""

    def __init__(self):
        self.ops = []
        self.emptied_at = {}

    def _op(self, node, path, state, t, **extra):
        op = {"seq": len(self.ops) + 1, "node": node, "path": path, "state": state, "t": t,
              "acked": True}
        op.update(extra)
        self.ops.append(op)

    def write(self, node, path, text, t):
        self._op(node, path, sha(text), t)

    def delete(self, node, path, text, t):
        self._op(node, path, None, t, deleted=sha(text))

    def rename(self, node, src, dst, text, t):
        self._op(node, src, None, t)
        self._op(node, dst, sha(text), t)

    def empty(self, node, t):
        self.emptied_at.setdefault(node, []).append(t)

    def check(self, files):
        """files: path -> text of the final tree. Returns (lost lines, checker)."""
        tree = {path: "644 file " + sha(text) for path, text in files.items()}
        checker = Checker(self.ops, self.emptied_at)
        _, lost, _ = checker.check(tree)
        return lost, checker


class CheckerTest(unittest.TestCase):
    def assert_delete_undone(self, h, files):
        lost, checker = h.check(files)
        self.assertEqual(lost, [])
        self.assertEqual(checker.delete_overridden, 1)


def edited_while_renamed(h, editor, t_edit):
    """x.txt written by node 3, renamed to p.txt by node 4 at 7.9, edited as x.txt by `editor`."""
    h.write(3, "x.txt", "v1", 0.0)
    h.rename(4, "x.txt", "p.txt", "v1", 7.9)
    h.write(editor, "x.txt", "v2", t_edit)


class PlainOutcomes(CheckerTest):
    def test_a_write_missing_from_the_final_tree_is_lost(self):
        h = History()
        h.write(2, "f.txt", "v1", 0.0)
        lost, _ = h.check({})
        self.assertEqual(len(lost), 1)
        self.assertIn("f.txt: acked op 1", lost[0])

    def test_a_write_replaced_by_unknown_content_is_lost(self):
        h = History()
        h.write(2, "f.txt", "v1", 0.0)
        lost, _ = h.check({"f.txt": "nobody wrote this"})
        self.assertEqual(len(lost), 1)

    def test_a_later_op_on_the_same_path_supersedes_a_write(self):
        h = History()
        h.write(2, "f.txt", "v1", 0.0)
        h.write(3, "f.txt", "v2", 1.0)
        self.assertEqual(h.check({"f.txt": "v2"})[0], [])
        h.delete(4, "f.txt", "v2", 2.0)
        self.assertEqual(h.check({})[0], [])

    def test_an_older_write_in_the_final_tree_is_lost(self):
        h = History()
        h.write(2, "f.txt", "v1", 0.0)
        h.write(3, "f.txt", "v2", 40.0)
        self.assertEqual(len(h.check({"f.txt": "v1"})[0]), 1)

    def test_a_write_kept_as_a_conflict_copy(self):
        h = History()
        h.write(2, "d/f.txt", "v1", 0.0)
        h.write(3, "d/f.txt", "v2", 0.1)
        lost, _ = h.check({"d/f.txt": "v1", "d/f.conflict-3-20261126T000000Z.txt": "v2"})
        self.assertEqual(lost, [])
        self.assertEqual(len(h.check({"d/f.txt": "v1", "e/f.conflict-3-x.txt": "v2"})[0]), 1)

    def test_a_write_the_deleting_node_had_seen_must_not_come_back(self):
        # Bug 21: a node wrote a file and deleted it a millisecond later, before the write had
        # committed; the write's apply recreated it on every node.
        h = History()
        h.write(1, "f.txt", "v1", 0.0)
        h.delete(1, "f.txt", "v1", 0.001)
        self.assertEqual(len(h.check({"f.txt": "v1"})[0]), 1)
        h = History()
        h.write(2, "f.txt", "v1", 0.0)
        h.delete(3, "f.txt", "v1", 30.0)  # another node, long after: it had seen the write
        self.assertEqual(len(h.check({"f.txt": "v1"})[0]), 1)

    def test_a_delete_undone_by_a_concurrent_write(self):
        h = History()
        h.write(2, "f.txt", "v1", 0.0)
        h.write(3, "f.txt", "v2", 1.0)
        h.delete(2, "f.txt", "v1", 1.5)
        self.assert_delete_undone(h, {"f.txt": "v2"})


class RenameOutcomes(CheckerTest):
    def test_a_write_follows_a_concurrent_rename_by_another_node(self):
        h = History()
        h.write(2, "a.txt", "v1", 0.0)
        h.rename(3, "a.txt", "b.txt", "v1", 1.0)
        h.write(2, "a.txt", "v2", 1.2)  # node 2 had not applied the rename yet
        lost, checker = h.check({"b.txt": "v2"})
        self.assertEqual(lost, [])
        self.assertEqual(checker.followed, 1)

    def test_a_rename_long_before_a_write_is_not_concurrent(self):
        h = History()
        h.write(2, "a.txt", "v1", 0.0)
        h.rename(3, "a.txt", "b.txt", "v1", 1.0)
        h.write(2, "a.txt", "v2", 30.0)
        self.assertEqual(len(h.check({"b.txt": "v2"})[0]), 1)

    def test_an_emptied_node_replays_its_predecessors_renames(self):
        # CI at f6d63f4, seed 24: the replacement of node 2 wrote a.txt while its replay was
        # between the old node 2's renames; the write followed the old rename a.txt -> b.txt.
        h = History()
        h.rename(2, "x.txt", "a.txt", "v1", 0.0)
        h.rename(2, "a.txt", "b.txt", "v1", 5.0)
        h.empty(2, 20.0)
        h.write(2, "a.txt", "v2", 21.0)
        self.assertEqual(h.check({"b.txt": "v2"})[0], [])

    def test_a_node_sees_its_own_renames_unless_emptied_after_them(self):
        h = History()
        h.rename(2, "x.txt", "a.txt", "v1", 0.0)
        h.rename(2, "a.txt", "b.txt", "v1", 5.0)
        h.write(2, "a.txt", "v2", 6.0)  # same incarnation: it made the rename, it saw it
        self.assertEqual(len(h.check({"b.txt": "v2"})[0]), 1)
        h = History()
        h.empty(2, 4.0)  # emptied before its new incarnation made the rename
        h.rename(2, "x.txt", "a.txt", "v1", 0.0)
        h.rename(2, "a.txt", "b.txt", "v1", 5.0)
        h.write(2, "a.txt", "v2", 6.0)
        self.assertEqual(len(h.check({"b.txt": "v2"})[0]), 1)

    def test_an_edit_under_the_first_of_two_names_follows_the_file(self):
        # Soak seed 5: node 3 (restarted) edited a.txt while node 4 renamed it twice.
        h = History()
        h.write(3, "a.txt", "v1", 0.0)
        h.write(3, "a.txt", "v2", 4.9)
        h.rename(4, "a.txt", "b.txt", "v1", 5.0)
        h.rename(4, "b.txt", "c.txt", "v1", 5.3)
        lost, checker = h.check({"c.txt": "v2"})
        self.assertEqual(lost, [])
        self.assertEqual(checker.followed, 1)

    def test_an_old_edit_under_an_earlier_name_does_not_excuse_a_loss(self):
        h = History()
        h.write(3, "a.txt", "v2", -20.0)
        h.write(3, "a.txt", "v1", 0.0)
        h.rename(4, "a.txt", "b.txt", "v1", 5.0)
        h.rename(4, "b.txt", "c.txt", "v1", 5.3)
        self.assertEqual(len(h.check({"c.txt": "v2"})[0]), 1)

    def test_a_delete_by_an_emptied_node_loses_to_its_predecessors_edit(self):
        # Node 2 edited x.txt while node 4 renamed it to p.txt (the edit followed the file), then
        # node 2 was emptied; its replacement, replaying the log, deleted p.txt as it showed then.
        # The edit, committed long before, wins over that delete.
        h = History()
        edited_while_renamed(h, 2, 8.0)
        h.empty(2, 20.0)
        h.delete(2, "p.txt", "v1", 21.0)
        self.assert_delete_undone(h, {"p.txt": "v2"})

    def test_an_emptied_nodes_edit_under_an_earlier_name_undoes_its_predecessors_delete(self):
        # CI at e1bc0b3's checker, seed 4: node 3 deleted p.txt and was replaced; its successor,
        # replaying, edited the file under its earlier name x.txt, and the edit followed the
        # rename to p.txt after the delete.
        h = History()
        h.write(3, "x.txt", "v1", 0.0)
        h.rename(4, "x.txt", "p.txt", "v1", 1.0)
        h.delete(3, "p.txt", "v1", 2.0)
        h.empty(3, 8.0)
        h.write(3, "x.txt", "v2", 9.0)
        self.assert_delete_undone(h, {"p.txt": "v2"})

    def test_a_delete_by_the_node_that_made_the_edit_stands(self):
        h = History()
        edited_while_renamed(h, 2, 8.0)
        h.delete(2, "p.txt", "v2", 21.0)  # not emptied: it had applied its own edit
        self.assertEqual(len(h.check({"p.txt": "v2"})[0]), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
