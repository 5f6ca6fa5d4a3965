//! What an exec pool's program is doing, read from outside: fastpm runs no code in it (it is
//! php-cgi or any FastCGI program accepting on fd 0), so its scoreboard slot is filled by the
//! master from `/proc/PID/syscall`. A program blocked in `accept()` on fd 0 waits for a
//! connection (Idle); anything else (on the CPU, reading a connection, running a script) holds
//! one (Running). Sampled every supervisor tick, so a request shorter than a tick may be missed
//! by `active processes`; the state is never invented.
//!
//! Why not count requests the same way: a transition seen between two samples is a lower bound,
//! not a count; `requests` of an exec child stays what the master knows (0).

use crate::scoreboard::WorkerState;

/// The state for a `/proc/PID/syscall` line (`None` when it cannot be read: a zombie, a
/// process that is gone, or a kernel without the file).
pub fn state_from_syscall(line: &str) -> Option<WorkerState> {
    let mut fields = line.split_whitespace();
    let first = fields.next()?;
    if first == "running" {
        return Some(WorkerState::Running);
    }
    let number: i64 = first.parse().ok()?;
    let fd = fields
        .next()
        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
    let in_accept = number == libc::SYS_accept || number == libc::SYS_accept4;
    Some(if in_accept && fd == Some(0) {
        WorkerState::Idle
    } else {
        WorkerState::Running
    })
}

/// Read the state of process `pid`.
pub fn sample(pid: u32) -> Option<WorkerState> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    state_from_syscall(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_on_fd_0_is_idle_everything_else_is_busy() {
        let accept = format!(
            "{} 0x0 0x7ffd 0x7ffd 0x0 0x0 0x0 0x7ffc 0x7f12",
            libc::SYS_accept
        );
        let accept4 = format!(
            "{} 0x0 0x7ffd 0x7ffd 0x80000 0x0 0x0 0x7ffc 0x7f12",
            libc::SYS_accept4
        );
        let accept_other_fd = format!(
            "{} 0x5 0x7ffd 0x7ffd 0x0 0x0 0x0 0x7ffc 0x7f12",
            libc::SYS_accept
        );
        let read = format!(
            "{} 0x4 0x55d0 0x2000 0x0 0x0 0x0 0x7ffc 0x7f12",
            libc::SYS_read
        );
        let table: &[(&str, Option<WorkerState>)] = &[
            (&accept, Some(WorkerState::Idle)),
            (&accept4, Some(WorkerState::Idle)),
            (&accept_other_fd, Some(WorkerState::Running)),
            (&read, Some(WorkerState::Running)),
            ("running\n", Some(WorkerState::Running)),
            ("-1 0x7ffc 0x7f12\n", Some(WorkerState::Running)),
            ("", None),
            ("garbage", None),
        ];
        for (line, want) in table {
            assert_eq!(state_from_syscall(line), *want, "{line:?}");
        }
    }
}
