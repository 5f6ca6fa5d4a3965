# benches/proctree.py — the process tree under a pid, read from /proc; shared by realapp.py
# (PSS of a backend's tree) and cpu_breakdown.py (CPU of every thread of a backend's tree).

import os


def read(path):
    """A /proc file's text, or None when the process or thread is gone."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def descendants(pid):
    """pid and every process below it (by parent pid), at this instant."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read(f"/proc/{entry}/stat")
            if stat:
                # The command name may contain spaces and parentheses: fields start after the last ")".
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree
