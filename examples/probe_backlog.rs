//! Bind a listening socket with a given backlog and print what the kernel made of it.
//!
//! ```text
//! cargo run --example probe_backlog -- unix:/tmp/x.sock 511
//! ```
//!
//! Prints one `key=value` line (`somaxconn`, `requested`, `queued`, `backlog`, `method`) and,
//! when the kernel clamps the backlog, fastpm's warning on a line starting with `warning: `.
//! The somaxconn test runs it inside a private network namespace (`unshare -n`) whose
//! somaxconn was lowered, to see the real clamp.

use std::process::ExitCode;

use fastpm::listen::{bind, clamp_warning, read_somaxconn, BindOptions, ListenAddress};
use fastpm::probe::QueueProbe;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, backlog] = args.as_slice() else {
        eprintln!("usage: probe_backlog ADDRESS BACKLOG");
        return ExitCode::from(2);
    };
    match run(address, backlog) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe_backlog: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(address: &str, backlog: &str) -> Result<(), Box<dyn std::error::Error>> {
    let address: ListenAddress = address.parse()?;
    let requested: u32 = backlog.parse()?;
    let somaxconn = read_somaxconn()?;
    if let Some(warning) = clamp_warning(&address, requested, somaxconn) {
        println!("warning: {warning}");
    }
    let options = BindOptions {
        backlog: requested,
        ..BindOptions::default()
    };
    let listener = bind(&address, &options)?;
    let mut probe = QueueProbe::for_listener(&listener)?;
    let reading = probe.read()?;
    println!(
        "somaxconn={somaxconn} requested={requested} queued={} backlog={} method={}",
        reading.queued,
        reading.backlog,
        probe.method()
    );
    if let ListenAddress::Unix(path) = &address {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
