//! One CGI script run: feed the request body to its stdin while reading stdout and stderr
//! (poll over the three pipes, so neither side can deadlock the other), parse the header block,
//! stream the rest, log stderr, and kill the process group at the deadline.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, ExitStatus};
use std::time::Instant;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::headers::{parse_header_block, HeaderBlock};
use crate::fastcgi::ResponseWriter;

/// Most header bytes a script may print before its blank line.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Pipe read size.
const CHUNK: usize = 64 * 1024;

/// How a run ended, for the caller to answer and log.
#[derive(Debug)]
pub enum RunEnd {
    /// Headers were sent; the script ran to the end of its output.
    Complete(Option<ExitStatus>),
    /// Output ended (the script exited) before a complete header block.
    NoHeaders(Option<ExitStatus>),
    /// The header block was not CGI.
    BadHeaders(String),
    /// The deadline passed; `headers_sent` says whether a 504 can still be sent.
    TimedOut { headers_sent: bool },
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// SIGKILL the script's process group (it is a session leader: see `sys::child`).
pub fn kill_group(child: &Child) {
    let pid = child.id() as i32;
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
}

/// The pipes of a running script and what has been done with them.
pub struct Pipes {
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

/// Drive the script to the end. `log_stderr` gets each line of its stderr; `client_error`
/// keeps the first failed write to the client (the run goes on, its output is dropped).
pub fn run(
    child: &mut Child,
    mut pipes: Pipes,
    body: &[u8],
    deadline: Option<Instant>,
    out: &mut ResponseWriter<'_>,
    log_stderr: &mut dyn FnMut(&[u8]),
    client_error: &mut Option<io::Error>,
) -> io::Result<RunEnd> {
    for fd in [
        pipes.stdin.as_ref().map(|p| p.as_fd()),
        pipes.stdout.as_ref().map(|p| p.as_fd()),
        pipes.stderr.as_ref().map(|p| p.as_fd()),
    ]
    .into_iter()
    .flatten()
    {
        set_nonblocking(fd)?;
    }
    if body.is_empty() {
        pipes.stdin = None;
    }
    let mut written = 0;
    let mut head: Vec<u8> = Vec::new();
    let mut headers_sent = false;
    let mut err_line: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    let mut forward = |bytes: &[u8], client_error: &mut Option<io::Error>| {
        if client_error.is_none() {
            if let Err(e) = out.stdout(bytes) {
                *client_error = Some(e);
            }
        }
    };
    while pipes.stdout.is_some() || pipes.stderr.is_some() {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    kill_group(child);
                    let _ = child.wait();
                    return Ok(RunEnd::TimedOut { headers_sent });
                }
                PollTimeout::try_from(left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
        };
        let (ready_in, ready_out, ready_err) = {
            let mut fds = Vec::with_capacity(3);
            let mut slots = [None; 3];
            if let Some(p) = &pipes.stdin {
                slots[0] = Some(fds.len());
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLOUT));
            }
            if let Some(p) = &pipes.stdout {
                slots[1] = Some(fds.len());
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            }
            if let Some(p) = &pipes.stderr {
                slots[2] = Some(fds.len());
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(0) => continue,
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready = |slot: Option<usize>| {
                slot.is_some_and(|i| fds[i].revents().is_some_and(|r| !r.is_empty()))
            };
            (ready(slots[0]), ready(slots[1]), ready(slots[2]))
        };
        if ready_in {
            if let Some(stdin) = pipes.stdin.as_mut() {
                match stdin.write(&body[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    // The script does not read its body (or exited): stop offering it.
                    Err(_) => written = body.len(),
                }
                if written == body.len() {
                    pipes.stdin = None;
                }
            }
        }
        if ready_out {
            if let Some(stdout) = pipes.stdout.as_mut() {
                match stdout.read(&mut chunk) {
                    Ok(0) => pipes.stdout = None,
                    Ok(n) if headers_sent => forward(&chunk[..n], client_error),
                    Ok(n) => {
                        head.extend_from_slice(&chunk[..n]);
                        match parse_header_block(&head, MAX_HEADER_BYTES) {
                            HeaderBlock::Incomplete => {}
                            HeaderBlock::Done {
                                head: block,
                                body_start,
                            } => {
                                forward(&block, client_error);
                                forward(&head[body_start..], client_error);
                                headers_sent = true;
                                head = Vec::new();
                            }
                            HeaderBlock::Invalid(why) => {
                                kill_group(child);
                                let _ = child.wait();
                                return Ok(RunEnd::BadHeaders(why));
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => pipes.stdout = None,
                }
            }
        }
        if ready_err {
            if let Some(stderr) = pipes.stderr.as_mut() {
                match stderr.read(&mut chunk) {
                    Ok(0) => pipes.stderr = None,
                    Ok(n) => {
                        err_line.extend_from_slice(&chunk[..n]);
                        while let Some(nl) = err_line.iter().position(|&b| b == b'\n') {
                            log_stderr(&err_line[..nl]);
                            err_line.drain(..=nl);
                        }
                        if err_line.len() > 4096 {
                            log_stderr(&err_line);
                            err_line.clear();
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => pipes.stderr = None,
                }
            }
        }
    }
    if !err_line.is_empty() {
        log_stderr(&err_line);
    }
    drop(pipes);
    let status = child.wait().ok();
    Ok(if headers_sent {
        RunEnd::Complete(status)
    } else {
        RunEnd::NoHeaders(status)
    })
}
