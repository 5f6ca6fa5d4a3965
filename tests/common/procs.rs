//! The process table as /proc shows it: who is whose child, by command name — for tests that
//! check which processes a master runs and whether they were replaced.

use std::collections::BTreeSet;

/// One process: its pid, its parent's pid and its command name (`comm`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub name: String,
}

/// Every process now (those that end while being read are left out).
pub fn all() -> Vec<Proc> {
    let mut procs = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid …"; comm may hold spaces and parentheses.
        let Some((head, tail)) = stat.rsplit_once(") ") else {
            continue;
        };
        let name = head.split_once(" (").map(|(_, n)| n).unwrap_or("");
        let ppid = tail
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        procs.push(Proc {
            pid,
            ppid,
            name: name.to_string(),
        });
    }
    procs
}

/// Processes whose parent is `parent` and whose command name is `name`.
pub fn children_named(parent: i32, name: &str) -> Vec<i32> {
    all()
        .into_iter()
        .filter(|p| p.ppid == parent && p.name == name)
        .map(|p| p.pid)
        .collect()
}

/// Whether `pid` is still a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S …": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Every process below `root` (children, grandchildren…).
pub fn descendants(root: i32) -> BTreeSet<Proc> {
    let table = all();
    let mut found = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in table.iter().filter(|p| p.ppid == parent) {
            if found.insert(p.clone()) {
                frontier.push(p.pid);
            }
        }
    }
    found
}

/// The first number on `key`'s line of /proc/PID/status: `"Uid:"` the real uid, `"VmRSS:"`
/// and `"VmHWM:"` KiB.
pub fn status_number(pid: i32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key} of {pid} in:\n{status}"))
}
