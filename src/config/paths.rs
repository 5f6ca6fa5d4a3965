//! Resolving relative paths: against the config file's directory, then cleaned lexically.

use std::path::{Path, PathBuf};

/// `path` without `.` components and with `..` folded into its parent, lexically (as Go's
/// `filepath.Clean`), so `conf/examples/../../php-examples` reads as `php-examples` in logs
/// and `fastpm check`. A `..` that would climb above the root or a relative start is kept.
pub fn clean_path(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(component),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}
