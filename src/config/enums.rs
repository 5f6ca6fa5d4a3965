//! The config's word-valued settings (`pm = "dynamic"` …): one Rust enum each, with the exact
//! spelling the file uses, a parser whose error lists every accepted word, and `Display`
//! giving the spelling back (for `fastpm check`, logs and the status page).

use std::fmt;

/// A setting whose value is one of a fixed set of lowercase words.
pub trait ConfigWord: Sized + Copy + 'static {
    /// Every accepted spelling with its value, in the order error messages list them.
    const WORDS: &'static [(&'static str, Self)];

    /// The value spelled `word`, or a message naming the bad word and every accepted one.
    fn parse_word(word: &str) -> Result<Self, String> {
        Self::WORDS
            .iter()
            .find(|(spelling, _)| *spelling == word)
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                let expected: Vec<&str> = Self::WORDS.iter().map(|(s, _)| *s).collect();
                format!(
                    "unknown value {word:?}, expected one of {}",
                    expected.join(", ")
                )
            })
    }
}

/// Defines an enum, its `ConfigWord` table and its `Display`, so the spelling lives in one place.
macro_rules! config_word {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl ConfigWord for $name {
            const WORDS: &'static [(&'static str, Self)] = &[ $( ($word, Self::$variant), )+ ];
        }

        impl $name {
            /// The spelling used in the config file.
            pub fn as_str(self) -> &'static str {
                match self { $( Self::$variant => $word, )+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_word! {
    /// How workers run.
    pub enum WorkerKind {
        /// Re-exec'd fastpm processes: a crash or leak stays inside one worker.
        Process => "process",
        /// Threads inside the master: no extra processes, shared memory for free.
        Thread => "thread",
    }
}

config_word! {
    /// What serialises `accept()` between workers of a pool.
    pub enum AcceptLock {
        /// A robust process-shared pthread mutex in the scoreboard (owner death recovered).
        Mutex => "mutex",
        /// `fcntl(F_SETLKW)` on a lock file, Apache's default.
        Fcntl => "fcntl",
        /// `flock()` on a lock file.
        Flock => "flock",
        /// No lock: every worker waits in `accept()`/`EPOLLEXCLUSIVE`; the kernel wakes one.
        None => "none",
    }
}

config_word! {
    /// Process manager, as php-fpm's `pm`.
    pub enum PmKind {
        /// Always `max_children` workers.
        Static => "static",
        /// Between `min_spare_servers` and `max_spare_servers` idle workers.
        Dynamic => "dynamic",
        /// Start workers when requests arrive, stop them after `idle_timeout`.
        Ondemand => "ondemand",
    }
}

config_word! {
    /// What runs a request.
    pub enum AppKind {
        /// PHP through a php-cgi child per worker.
        Php => "php",
        /// CGI scripts (RFC 3875), one fork/exec per request.
        Cgi => "cgi",
        /// An external FastCGI program that accepts on fd 0 (spawn-fcgi model).
        Exec => "exec",
        /// Built-in: a fixed greeting (smoke tests, benchmarks).
        Hello => "hello",
        /// Built-in: answers with the request's params and body.
        Echo => "echo",
        /// Built-in: sleeps, to make queues form on purpose.
        Sleep => "sleep",
        /// Built-in: long-polling (COMET) host holding many requests.
        Longpoll => "longpoll",
    }
}

config_word! {
    /// php: how a pool's php-cgi processes are arranged (`php_children`).
    pub enum PhpChildren {
        /// One php-cgi parent per pool forks `max_children` children after PHP (and opcache)
        /// is set up, so they share one opcache, as php-fpm's children do; fastpm's workers each
        /// keep a connection to one of them.
        Shared => "shared",
        /// Each worker starts its own php-cgi (its own opcache, its own cold start).
        PerWorker => "per-worker",
        /// No php-cgi: PHP (libphp8.2-embed) runs inside each worker process, with no relay
        /// between worker and PHP. PHP starts once in the pool's php parent, which forks the
        /// worker processes: they share its opcache, as php-fpm's children share its master's.
        /// Needs `workers = "process"` (libphp is not thread-safe: one interpreter a process).
        Embedded => "embedded",
    }
}

config_word! {
    /// Overload policy: which requests to shed before they reach the app.
    pub enum OverloadPolicy {
        /// Never shed.
        None => "none",
        /// Shed requests whose queue wait exceeds `max_queue_wait`.
        Deadline => "deadline",
        /// Shed while the queue wait has stayed above `target` for `interval` (CoDel).
        Codel => "codel",
    }
}

config_word! {
    /// Log verbosity (tracing levels).
    pub enum LogLevel {
        /// Only errors.
        Error => "error",
        /// Errors and warnings (e.g. the somaxconn clamp).
        Warn => "warn",
        /// Normal operation: startup choices, pool changes.
        Info => "info",
        /// Per-request detail.
        Debug => "debug",
        /// Everything.
        Trace => "trace",
    }
}

config_word! {
    /// Log line format.
    pub enum LogFormat {
        /// Human-readable lines.
        Text => "text",
        /// One JSON object per line, for log shippers.
        Json => "json",
    }
}
