//! The master's tracing output when `[global] error_log` is set: each event (tracing formats
//! one whole line and writes it once) goes to the error log file, under the same lock as the
//! lines relayed from worker processes, so the file follows a `USR1` reopen like the others.

use std::io::{self, Write};
use std::sync::Arc;

use super::master_files::MasterFiles;
use super::relay::Route;

/// A `tracing_subscriber` writer (`with_writer(move || writer.clone())`).
#[derive(Clone)]
pub struct ErrorLogWriter(Arc<MasterFiles>);

impl ErrorLogWriter {
    pub(super) fn new(files: Arc<MasterFiles>) -> Self {
        Self(files)
    }
}

impl Write for ErrorLogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(Route::Error, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
