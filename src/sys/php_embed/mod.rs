//! PHP inside a worker process (`php_children = "embedded"`): loading libphp and fastpm's SAPI
//! (`shim.c`), and running one request through it. The safe face is [`Interpreter`]; the app
//! that uses it (script resolution, status, the FastCGI answer) is `app::php::embedded`.
//!
//! Why a shim loaded at run time and not a link to libphp: fastpm must start (and run every
//! other kind of pool) on a machine without libphp. build.rs compiles `shim.c` against PHP's
//! headers into a shared object whose PHP symbols stay undefined; fastpm carries its bytes.
//! The pool's php parent (`worker::php_parent`) opens libphp8.2.so with RTLD_GLOBAL (PHP's
//! extensions, loaded by PHP with dlopen, look its symbols up globally), then the shim from a
//! memfd, starts PHP and parks it; each worker forked from it takes it over.
//!
//! Debian's libphp is built without thread safety (NTS): one interpreter per process, used by
//! one thread at a time — php-fpm's arrangement, and why embedded PHP needs process workers.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::PhpIni;

/// The library the shim's PHP symbols come from (the SONAME of Debian's libphp8.2-embed).
pub const LIBPHP: &str = "libphp8.2.so";

/// Where PHP's embed build looks for php.ini and its conf.d on Debian (compiled into libphp).
pub const PHP_INI_DIR: &str = "/etc/php/8.2/embed";

/// The shim, when this fastpm was built with PHP's headers (build.rs sets the cfg).
#[cfg(fastpm_php_shim)]
static SHIM: Option<&[u8]> = Some(include_bytes!(concat!(
    env!("OUT_DIR"),
    "/fastpm-php-shim.so"
)));
#[cfg(not(fastpm_php_shim))]
static SHIM: Option<&[u8]> = None;

/// One interpreter per process (see the module comment).
static STARTED: AtomicBool = AtomicBool::new(false);

/// The interpreter the php parent started, left for the worker forked from it to take.
/// Or why it could not start, for the worker to answer with.
static PARKED: std::sync::Mutex<Option<Result<Interpreter, String>>> = std::sync::Mutex::new(None);

/// What the shim's `fastpm_php_run` answers when PHP could not start the request.
const REQUEST_STARTUP_FAILED: c_int = -1;

/// Why PHP could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("this fastpm was built without PHP's headers (install php8.2-dev and build again)")]
    NotBuilt,
    #[error("{LIBPHP} cannot be loaded ({0}); on Debian: apt-get install libphp8.2-embed")]
    NoLibphp(String),
    #[error("fastpm's PHP SAPI cannot be loaded: {0}")]
    Shim(String),
    #[error("PHP is already running in this process (one interpreter per process)")]
    AlreadyStarted,
    #[error("PHP's module start-up failed (see the messages above; php.ini under {PHP_INI_DIR})")]
    Startup,
    #[error("an ini setting holds a NUL byte")]
    NulInIni,
    #[error("PHP could not start in the php parent: {0}")]
    InParent(String),
    #[error("no PHP here: this process was not forked from a php parent")]
    NotParked,
}

/// Whether this build carries the SAPI (a `check` can refuse an embedded pool early).
pub fn built_in() -> bool {
    SHIM.is_some()
}

/// Where a request's output goes while PHP runs it.
pub trait Sink {
    /// PHP's output (the CGI head first). `false`: the client is gone (PHP stops the script
    /// unless it set `ignore_user_abort`).
    fn stdout(&mut self, bytes: &[u8]) -> bool;
    /// PHP's `flush()`: send what is buffered now.
    fn flush(&mut self) -> bool;
    /// One message of PHP's error log (no trailing newline).
    fn message(&mut self, text: &[u8]);
    /// `fastcgi_finish_request()`: end the answer now (the script goes on; what it writes
    /// after is dropped).
    fn finish(&mut self) -> bool;
}

/// One FastCGI param, laid out for the shim (`struct fastpm_param`).
#[repr(C)]
struct RawParam {
    name: *const c_char,
    name_len: usize,
    value: *mut c_char,
    value_len: usize,
}

/// `struct fastpm_request`.
#[repr(C)]
struct RawRequest {
    params: *const RawParam,
    nparams: usize,
    script: *const c_char,
    body: *const c_char,
    body_len: usize,
    sink: *mut c_void,
}

/// `struct fastpm_callbacks`.
#[repr(C)]
struct Callbacks {
    write: extern "C" fn(*mut c_void, *const c_char, usize) -> c_int,
    flush: extern "C" fn(*mut c_void) -> c_int,
    log: extern "C" fn(*mut c_void, *const c_char, usize),
    finish: extern "C" fn(*mut c_void) -> c_int,
}

static CALLBACKS: Callbacks = Callbacks {
    write: on_write,
    flush: on_flush,
    log: on_log,
    finish: on_finish,
};

type StartupFn = unsafe extern "C" fn(*const Callbacks, *const c_char, *const c_char) -> c_int;
type RunFn = unsafe extern "C" fn(*const RawRequest, *mut c_int) -> c_int;

/// The sink of the request being run: a `&mut dyn Sink` behind a thin pointer.
type SinkRef<'a> = &'a mut dyn Sink;

/// # Safety (for the callbacks)
/// `sink` is null or the `*mut SinkRef` that [`Interpreter::run`] passed for the request it is
/// running on this thread; PHP calls back only while `run` waits for it.
fn with_sink(sink: *mut c_void, f: impl FnOnce(&mut dyn Sink)) -> bool {
    if sink.is_null() {
        return false;
    }
    // SAFETY: see above; the pointee outlives the call (it is a local of `run`).
    let sink = unsafe { &mut *(sink as *mut SinkRef<'_>) };
    // A panic must not unwind into C: it would cross PHP's frames.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut **sink))).is_ok()
}

fn bytes<'a>(ptr: *const c_char, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: the shim passes a pointer to `len` readable bytes that live for the call.
    unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }
}

/// A callback's answer to the shim: 0 when `f` said yes, -1 otherwise (or when there was no
/// request to ask).
fn answer(sink: *mut c_void, f: impl FnOnce(&mut dyn Sink) -> bool) -> c_int {
    let mut ok = false;
    with_sink(sink, |s| ok = f(s));
    if ok {
        0
    } else {
        -1
    }
}

extern "C" fn on_write(sink: *mut c_void, ptr: *const c_char, len: usize) -> c_int {
    answer(sink, |s| s.stdout(bytes(ptr, len)))
}

extern "C" fn on_flush(sink: *mut c_void) -> c_int {
    answer(sink, |s| s.flush())
}

extern "C" fn on_finish(sink: *mut c_void) -> c_int {
    answer(sink, |s| s.finish())
}

extern "C" fn on_log(sink: *mut c_void, ptr: *const c_char, len: usize) {
    let text = bytes(ptr, len);
    if !with_sink(sink, |s| s.message(text)) {
        // Outside a request (start-up): only fastpm's log.
        for line in crate::logs::stderr_lines(text) {
            tracing::warn!("php: {}", crate::logs::bounded(line));
        }
    }
}

/// One request for PHP: its params, the script fastpm resolved, its body.
pub struct PhpRequest<'a> {
    pub params: &'a [(&'a [u8], &'a [u8])],
    pub script: &'a std::path::Path,
    pub body: &'a [u8],
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    /// The script ran (or stopped on an error, which it answered): PHP's exit status.
    Finished(i32),
    /// PHP could not start the request; nothing was written.
    NotStarted,
}

/// PHP, started in this process. Not `Clone`; at most one per process.
pub struct Interpreter {
    run: RunFn,
    /// Reused per request: the params' names and values and the script's path, each
    /// followed by a NUL.
    text: Vec<u8>,
    /// Reused per request: where each param lies in `text`, as the shim reads them.
    params: Vec<RawParam>,
}

// SAFETY: the interpreter's state is the process's (NTS globals), not tied to the thread that
// started it; `run` takes `&mut self`, so one thread at a time uses it.
unsafe impl Send for Interpreter {}

impl Interpreter {
    /// Load libphp and the SAPI and run PHP's module start-up: php.ini (`php_ini`), its
    /// extensions (opcache), then `ini` ("name=value" each) over them. Call after the process
    /// has its final ids.
    pub fn start<'a>(
        php_ini: &PhpIni,
        ini: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<Self, EmbedError> {
        let shim = SHIM.ok_or(EmbedError::NotBuilt)?;
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(EmbedError::AlreadyStarted);
        }
        let mut entries = String::new();
        for (name, value) in ini {
            entries.push_str(name);
            entries.push('=');
            entries.push_str(value);
            entries.push('\n');
        }
        let entries = CString::new(entries).map_err(|_| EmbedError::NulInIni)?;
        // The shim's php_ini: null = PHP's search, "" = none (-n), else a path (-c).
        let php_ini = match php_ini {
            PhpIni::Search => None,
            PhpIni::None => Some(CString::default()),
            PhpIni::Path(path) => Some(
                CString::new(path.as_os_str().as_encoded_bytes())
                    .map_err(|_| EmbedError::NulInIni)?,
            ),
        };
        open_library(LIBPHP).map_err(EmbedError::NoLibphp)?;
        let handle = open_shim(shim).map_err(EmbedError::Shim)?;
        let startup: StartupFn = symbol(handle, c"fastpm_php_startup").map_err(EmbedError::Shim)?;
        let run: RunFn = symbol(handle, c"fastpm_php_run").map_err(EmbedError::Shim)?;
        // SAFETY: the shim's start-up, called once per process (STARTED); CALLBACKS is static;
        // the shim copies `entries` and `php_ini`.
        let php_ini_ptr = php_ini.as_ref().map_or(std::ptr::null(), |p| p.as_ptr());
        if unsafe { startup(&CALLBACKS, entries.as_ptr(), php_ini_ptr) } != 0 {
            return Err(EmbedError::Startup);
        }
        Ok(Self {
            run,
            text: Vec::new(),
            params: Vec::new(),
        })
    }

    /// Leave the interpreter for this process (and the children it forks) to take back with
    /// [`Interpreter::take_parked`]: the php parent starts PHP once for its workers. A
    /// start that failed is parked too: its workers answer with the reason (starting PHP
    /// again in a copy of a process where it failed half-way would not be sound).
    pub fn park(started: Result<Self, EmbedError>) {
        *PARKED.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(started.map_err(|e| e.to_string()));
    }

    /// The interpreter the php parent parked (a worker forked from it), or why there is none.
    pub fn take_parked() -> Result<Self, EmbedError> {
        match PARKED.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(parked) => parked.map_err(EmbedError::InParent),
            None => Err(EmbedError::NotParked),
        }
    }

    /// Run `request`; its output goes to `sink` as PHP produces it.
    pub fn run(&mut self, request: &PhpRequest<'_>, sink: &mut dyn Sink) -> Ran {
        // Names and values, then the script's path, each with a NUL after it, in one buffer
        // (kept between requests, as `params`); pointers taken once it stopped growing.
        let script = request.script.as_os_str().as_encoded_bytes();
        if script.contains(&0) {
            return Ran::NotStarted;
        }
        self.text.clear();
        for (name, value) in request.params {
            for part in [name, value] {
                self.text.extend_from_slice(part);
                self.text.push(0);
            }
        }
        let script_at = self.text.len();
        self.text.extend_from_slice(script);
        self.text.push(0);
        let base = self.text.as_mut_ptr() as *mut c_char;
        self.params.clear();
        let mut at = 0;
        for (name, value) in request.params {
            let value_at = at + name.len() + 1;
            self.params.push(RawParam {
                // SAFETY: offsets within `text` (laid out above), which is not touched again
                // until `run` ends.
                name: unsafe { base.add(at) },
                name_len: name.len(),
                value: unsafe { base.add(value_at) },
                value_len: value.len(),
            });
            at = value_at + value.len() + 1;
        }
        let mut sink_ref: SinkRef<'_> = sink;
        let raw = RawRequest {
            params: self.params.as_ptr(),
            nparams: self.params.len(),
            // SAFETY: within `text`, NUL-terminated (above).
            script: unsafe { base.add(script_at) },
            body: request.body.as_ptr() as *const c_char,
            body_len: request.body.len(),
            sink: &mut sink_ref as *mut SinkRef<'_> as *mut c_void,
        };
        // SAFETY: every pointer in `raw`, and `exit_status`, points into locals that outlive
        // the call; the shim keeps none of them after it returns.
        let mut exit_status: c_int = 0;
        let result = unsafe { (self.run)(&raw, &mut exit_status) };
        if result == REQUEST_STARTUP_FAILED {
            Ran::NotStarted
        } else {
            Ran::Finished(exit_status)
        }
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next dl call.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        return "unknown error".into();
    }
    // SAFETY: non-null, NUL-terminated (above).
    unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned()
}

fn open_library(name: &str) -> Result<*mut c_void, String> {
    let name = CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated name; loading libphp runs no PHP code (its constructors only
    // set up static data).
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        return Err(dl_error());
    }
    Ok(handle)
}

/// The shim from a memfd (it lives in fastpm's binary; there is no file to point dlopen at).
fn open_shim(bytes: &[u8]) -> Result<*mut c_void, String> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    // MFD_EXEC (Linux 6.3+): a memfd that may be mapped executable even where
    // vm.memfd_noexec makes them not by default; older kernels refuse the flag.
    const MFD_EXEC: libc::c_uint = 0x10;
    let fd = memfd_create(
        c"fastpm-php-shim",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::from_bits_retain(MFD_EXEC),
    )
    .or_else(|_| memfd_create(c"fastpm-php-shim", MemFdCreateFlag::MFD_CLOEXEC))
    .map_err(|e| format!("memfd_create: {e}"))?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, bytes).map_err(|e| format!("memfd: {e}"))?;
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let handle = open_library(&path)?;
    // The mapping keeps the object; the descriptor may go.
    drop(file);
    Ok(handle)
}

fn symbol<T: Copy>(handle: *mut c_void, name: &CStr) -> Result<T, String> {
    // SAFETY: a handle from dlopen and a NUL-terminated name.
    let address = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if address.is_null() {
        return Err(format!("{}: {}", name.to_string_lossy(), dl_error()));
    }
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: T is the function pointer type the shim defines for `name` (same size, checked).
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&address) })
}

/// Whether a worker could start PHP: the SAPI is built in and libphp is where the dynamic
/// loader looks (LD_LIBRARY_PATH, then the system's directories). Loads nothing.
pub fn available() -> Result<(), EmbedError> {
    if !built_in() {
        return Err(EmbedError::NotBuilt);
    }
    let from_env = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
    let system = [
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/lib",
        "/lib/x86_64-linux-gnu",
        "/usr/local/lib",
    ];
    let found = std::env::split_paths(&from_env)
        .chain(system.iter().map(std::path::PathBuf::from))
        .any(|dir| dir.join(LIBPHP).is_file());
    if found {
        Ok(())
    } else {
        Err(EmbedError::NoLibphp("not found".into()))
    }
}
