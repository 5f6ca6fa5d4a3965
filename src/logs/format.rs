//! `access_format`: php-fpm's `access.format` language, parsed once (at config load, so a
//! mistake is refused with its position) and rendered for every request into one line.
//!
//! The fields are php-fpm's (`%%`, `%C`, `%d`, `%e`, `%f`, `%l`, `%m`, `%M`, `%n`, `%o`, `%p`,
//! `%P`, `%q`, `%Q`, `%r`, `%R`, `%s`, `%t`, `%T`, `%u`), with their `%{modifier}X` forms, plus
//! fastpm's queue wait: `%{queue_wait}` (microseconds) or `%w` with `%d`'s modifiers
//! (`%{mili}w`, `%{seconds}w`, `%{micro}w`). Where fastpm knows a fact differently from
//! php-fpm, the field says what fastpm knows (README "Logs"):
//!
//! - `%R` is the request's `REMOTE_ADDR` (the browser's address nginx passes), not the address
//!   of the FastCGI client (nginx itself) that php-fpm prints.
//! - `%u` is `REMOTE_USER`; `%r` is `REQUEST_URI` without its query (else `SCRIPT_NAME`).
//! - `%M` is the peak resident memory of the process that served the request (the fastpm
//!   worker), not PHP's `memory_get_peak_usage()`: php-cgi is a separate process.
//! - `%C` is the CPU the worker thread and the children it reaped (CGI scripts) spent during
//!   the request, over its duration; a php pool's work happens in php-cgi, which is not counted.
//!
//! Values that come from the request are escaped (`line::push_escaped`): a line stays one line.

use std::ffi::CString;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::line::push_escaped;
use super::response_head::ResponseHead;
use crate::fastcgi::Params;
use crate::sys::rusage::CpuTime;

/// php-fpm's default `access.format`, then the time the request waited in the kernel's accept
/// queue, in microseconds (`-` when not known).
pub const DEFAULT_ACCESS_FORMAT: &str = "%R - %u %t \"%m %r\" %s %{queue_wait}";

/// php-fpm's default time format for `%t` and `%T`.
const DEFAULT_TIME_FORMAT: &str = "%d/%b/%Y:%H:%M:%S %z";

/// Why an `access_format` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access_format: {0}")]
pub struct FormatError(pub String);

/// How a duration is written (`%d`, `%w`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationUnit {
    /// `1.234` (three decimals)
    Seconds,
    /// `1234.567`
    Millis,
    /// `1234567`
    Micros,
}

/// Which CPU time `%C` counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuPart {
    User,
    System,
    Total,
}

/// How `%M` writes memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryUnit {
    Bytes,
    Kilo,
    Mega,
}

/// One piece of a parsed format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    Text(Vec<u8>),
    Cpu(CpuPart),
    Duration(DurationUnit),
    Param(String),
    Script,
    ContentLength,
    Method,
    Memory(MemoryUnit),
    Pool,
    OutputHeader(String),
    Pid,
    MasterPid,
    Query,
    QueryMark,
    Uri,
    RemoteAddr,
    Status,
    /// `%t` (when the request started, `false`) or `%T` (when it ended, `true`), strftime format.
    Time {
        at_end: bool,
        format: CString,
    },
    RemoteUser,
    QueueWait(DurationUnit),
}

/// A parsed `access_format`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessFormat {
    fields: Vec<Field>,
}

/// Everything a line can say about one finished request.
pub struct AccessRecord<'a> {
    pub pool: &'a str,
    pub params: &'a Params,
    pub head: &'a ResponseHead,
    /// When the worker took the request (`%t`).
    pub started: SystemTime,
    /// When it finished (`%T`).
    pub finished: SystemTime,
    pub duration: Duration,
    /// Time in the kernel's accept queue; `None` when not known (a kept connection's later
    /// requests did not wait in it; the sampler may not have seen the arrival).
    pub queue_wait: Option<Duration>,
    pub pid: u32,
    pub master_pid: u32,
    /// CPU spent during the request, when the format asks (`%C`).
    pub cpu: Option<CpuTime>,
    /// Peak resident memory of the serving process, when the format asks (`%M`).
    pub memory: Option<u64>,
}

fn duration_unit(modifier: Option<&str>, letter: char) -> Result<DurationUnit, FormatError> {
    match modifier.map(str::to_ascii_lowercase).as_deref() {
        None if letter == 'w' => Ok(DurationUnit::Micros),
        None | Some("seconds") => Ok(DurationUnit::Seconds),
        Some("mili" | "milli" | "miliseconds" | "milliseconds") => Ok(DurationUnit::Millis),
        Some("micro" | "microseconds") => Ok(DurationUnit::Micros),
        Some(other) => Err(FormatError(format!(
            "%{{{other}}}{letter}: the modifier must be seconds, mili or micro"
        ))),
    }
}

fn time_format(modifier: Option<&str>) -> Result<CString, FormatError> {
    CString::new(modifier.unwrap_or(DEFAULT_TIME_FORMAT))
        .map_err(|_| FormatError("a %{...}t time format may not contain a NUL character".into()))
}

/// Build the field for `letter` with its optional `{modifier}`.
fn field(letter: char, modifier: Option<&str>) -> Result<Field, FormatError> {
    let named = |what: &str| match modifier {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(FormatError(format!(
            "%{letter} needs the name of {what} in braces, e.g. %{{{}}}{letter}",
            if letter == 'e' {
                "HTTP_HOST"
            } else {
                "Content-Type"
            }
        ))),
    };
    let field = match letter {
        'C' => Field::Cpu(match modifier.map(str::to_ascii_lowercase).as_deref() {
            None | Some("total") => CpuPart::Total,
            Some("user") => CpuPart::User,
            Some("system") => CpuPart::System,
            Some(other) => {
                return Err(FormatError(format!(
                    "%{{{other}}}C: the modifier must be total, user or system"
                )))
            }
        }),
        'd' => Field::Duration(duration_unit(modifier, 'd')?),
        'w' => Field::QueueWait(duration_unit(modifier, 'w')?),
        'e' => Field::Param(named("a FastCGI parameter")?),
        'o' => Field::OutputHeader(named("a response header")?),
        'M' => Field::Memory(match modifier.map(str::to_ascii_lowercase).as_deref() {
            None | Some("bytes") => MemoryUnit::Bytes,
            Some("kilo" | "kilobytes") => MemoryUnit::Kilo,
            Some("mega" | "megabytes") => MemoryUnit::Mega,
            Some(other) => {
                return Err(FormatError(format!(
                    "%{{{other}}}M: the modifier must be bytes, kilo or mega"
                )))
            }
        }),
        't' | 'T' => Field::Time {
            at_end: letter == 'T',
            format: time_format(modifier)?,
        },
        plain => {
            let field = match plain {
                'f' => Field::Script,
                'l' => Field::ContentLength,
                'm' => Field::Method,
                'n' => Field::Pool,
                'p' => Field::Pid,
                'P' => Field::MasterPid,
                'q' => Field::Query,
                'Q' => Field::QueryMark,
                'r' => Field::Uri,
                'R' => Field::RemoteAddr,
                's' => Field::Status,
                'u' => Field::RemoteUser,
                other => {
                    return Err(FormatError(format!(
                        "%{other} is not a field (php-fpm's fields and fastpm's %w, %{{queue_wait}}; see the README)"
                    )))
                }
            };
            if let Some(m) = modifier {
                return Err(FormatError(format!(
                    "%{plain} takes no modifier (found {{{m}}})"
                )));
            }
            field
        }
    };
    Ok(field)
}

impl AccessFormat {
    /// Parse php-fpm's format language (see the module's documentation).
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let mut fields: Vec<Field> = Vec::new();
        let mut literal = Vec::new();
        let mut chars = text.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            if c != '%' {
                let mut utf8 = [0u8; 4];
                literal.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                continue;
            }
            let mut modifier = None;
            let (_, mut letter) = chars
                .next()
                .ok_or_else(|| FormatError("the format ends with a lone %".into()))?;
            if letter == '%' {
                literal.push(b'%');
                continue;
            }
            if letter == '{' {
                let start = chars.peek().map_or(text.len(), |(i, _)| *i);
                let end = loop {
                    match chars.next() {
                        Some((i, '}')) => break i,
                        Some(_) => {}
                        None => {
                            return Err(FormatError(format!(
                                "missing closing brace after %{{{}",
                                &text[start..]
                            )))
                        }
                    }
                };
                let name = &text[start..end];
                if name == "queue_wait" {
                    // fastpm's own field: complete without a letter.
                    if !literal.is_empty() {
                        fields.push(Field::Text(std::mem::take(&mut literal)));
                    }
                    fields.push(Field::QueueWait(DurationUnit::Micros));
                    continue;
                }
                modifier = Some(name);
                letter = chars
                    .next()
                    .ok_or_else(|| {
                        FormatError(format!("%{{{name}}} is not followed by a field letter"))
                    })?
                    .1;
            }
            if !literal.is_empty() {
                fields.push(Field::Text(std::mem::take(&mut literal)));
            }
            fields.push(field(letter, modifier)?);
        }
        if !literal.is_empty() {
            fields.push(Field::Text(literal));
        }
        Ok(Self { fields })
    }

    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Whether a line needs the request's CPU time (measured at its start and end only then).
    pub fn needs_cpu(&self) -> bool {
        self.fields.iter().any(|f| matches!(f, Field::Cpu(_)))
    }

    /// Whether a line needs the process's memory.
    pub fn needs_memory(&self) -> bool {
        self.fields.iter().any(|f| matches!(f, Field::Memory(_)))
    }

    /// Append the line for `record` (without its newline).
    pub fn render(&self, record: &AccessRecord<'_>, out: &mut Vec<u8>) {
        let param = |name: &str| record.params.get(name).filter(|v| !v.is_empty());
        let or_dash = |out: &mut Vec<u8>, value: Option<&[u8]>| match value {
            Some(v) => push_escaped(out, v),
            None => out.push(b'-'),
        };
        for field in &self.fields {
            match field {
                Field::Text(text) => out.extend_from_slice(text),
                Field::Cpu(part) => push_cpu(out, record, *part),
                Field::Duration(unit) => push_duration(out, record.duration, *unit),
                Field::QueueWait(unit) => match record.queue_wait {
                    Some(wait) => push_duration(out, wait, *unit),
                    None => out.push(b'-'),
                },
                Field::Param(name) => or_dash(out, param(name)),
                Field::Script => or_dash(out, param("SCRIPT_FILENAME")),
                Field::ContentLength => {
                    let length = param("CONTENT_LENGTH")
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(0);
                    out.extend_from_slice(length.to_string().as_bytes());
                }
                Field::Method => or_dash(out, param("REQUEST_METHOD")),
                Field::Memory(unit) => {
                    let bytes = record.memory.unwrap_or(0);
                    let value = match unit {
                        MemoryUnit::Bytes => bytes,
                        MemoryUnit::Kilo => bytes / 1024,
                        MemoryUnit::Mega => bytes / 1024 / 1024,
                    };
                    out.extend_from_slice(value.to_string().as_bytes());
                }
                Field::Pool => push_escaped(out, record.pool.as_bytes()),
                Field::OutputHeader(name) => {
                    or_dash(out, record.head.header(name).filter(|v| !v.is_empty()))
                }
                Field::Pid => out.extend_from_slice(record.pid.to_string().as_bytes()),
                Field::MasterPid => out.extend_from_slice(record.master_pid.to_string().as_bytes()),
                Field::Query => push_escaped(out, param("QUERY_STRING").unwrap_or(b"")),
                Field::QueryMark => {
                    if param("QUERY_STRING").is_some() {
                        out.push(b'?');
                    }
                }
                Field::Uri => {
                    let uri = param("REQUEST_URI")
                        .map(|u| u.split(|&b| b == b'?').next().unwrap_or(u))
                        .or_else(|| param("SCRIPT_NAME"));
                    or_dash(out, uri);
                }
                Field::RemoteAddr => or_dash(out, param("REMOTE_ADDR")),
                Field::Status => match record.head.status() {
                    Some(code) => out.extend_from_slice(code.to_string().as_bytes()),
                    None => out.push(b'-'),
                },
                Field::Time { at_end, format } => {
                    let when = if *at_end {
                        record.finished
                    } else {
                        record.started
                    };
                    let secs = when
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    crate::sys::localtime::format_local(secs, format, out);
                }
                Field::RemoteUser => or_dash(out, param("REMOTE_USER")),
            }
        }
    }
}

fn push_duration(out: &mut Vec<u8>, d: Duration, unit: DurationUnit) {
    let text = match unit {
        DurationUnit::Seconds => format!("{:.3}", d.as_secs_f64()),
        DurationUnit::Millis => format!("{:.3}", d.as_secs_f64() * 1000.0),
        DurationUnit::Micros => d.as_micros().to_string(),
    };
    out.extend_from_slice(text.as_bytes());
}

/// php-fpm's `%C`: CPU time over wall time, in percent, two decimals.
fn push_cpu(out: &mut Vec<u8>, record: &AccessRecord<'_>, part: CpuPart) {
    let cpu = record.cpu.unwrap_or_default();
    let spent = match part {
        CpuPart::User => cpu.user,
        CpuPart::System => cpu.system,
        CpuPart::Total => cpu.user + cpu.system,
    };
    let wall = record.duration.as_secs_f64();
    let share = if wall > 0.0 {
        spent.as_secs_f64() / wall * 100.0
    } else {
        0.0
    };
    out.extend_from_slice(format!("{share:.2}").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect()
    }

    fn render(format: &str, params: &Params, head: &[u8], wait: Option<u64>) -> String {
        let mut response = ResponseHead::new();
        response.observe(head);
        let started = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let record = AccessRecord {
            pool: "www",
            params,
            head: &response,
            started,
            finished: started + Duration::from_secs(2),
            duration: Duration::from_micros(1_234_567),
            queue_wait: wait.map(Duration::from_micros),
            pid: 4242,
            master_pid: 1,
            cpu: Some(CpuTime {
                user: Duration::from_millis(600),
                system: Duration::from_millis(17),
            }),
            memory: Some(3 * 1024 * 1024 + 5),
        };
        let mut out = Vec::new();
        AccessFormat::parse(format)
            .unwrap()
            .render(&record, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fields_table() {
        let p = params(&[
            ("REMOTE_ADDR", "203.0.113.7"),
            ("REMOTE_USER", "alice"),
            ("REQUEST_METHOD", "POST"),
            ("REQUEST_URI", "/app/index.php?page=2"),
            ("SCRIPT_NAME", "/app/index.php"),
            ("SCRIPT_FILENAME", "/srv/app/index.php"),
            ("QUERY_STRING", "page=2"),
            ("CONTENT_LENGTH", "512"),
            ("HTTP_HOST", "example.org"),
            ("HTTP_USER_AGENT", "curl \"8\"\n"),
        ]);
        let head = b"Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\n";
        let table: &[(&str, &str)] = &[
            (
                "%R %u %m %r%Q%q",
                "203.0.113.7 alice POST /app/index.php?page=2",
            ),
            ("%f %l %n %p %P", "/srv/app/index.php 512 www 4242 1"),
            ("%s %{Content-Type}o %{X-None}o", "404 text/html -"),
            (
                "%d|%{seconds}d|%{mili}d|%{milli}d|%{micro}d",
                "1.235|1.235|1234.567|1234.567|1234567",
            ),
            (
                "%{queue_wait}|%w|%{mili}w|%{seconds}w",
                "2600|2600|2.600|0.003",
            ),
            ("%{HTTP_HOST}e %{NOPE}e", "example.org -"),
            ("%{HTTP_USER_AGENT}e", "curl \\x228\\x22\\x0A"),
            ("%M %{kilo}M %{mega}M", "3145733 3072 3"),
            ("%C %{user}C %{system}C", "49.98 48.60 1.38"),
            ("%{%s}t %{%s}T", "1700000000 1700000002"),
            ("100%% sure", "100% sure"),
            ("", ""),
        ];
        for (format, want) in table {
            assert_eq!(render(format, &p, head, Some(2600)), *want, "{format}");
        }
    }

    #[test]
    fn missing_facts_table() {
        let p = params(&[("SCRIPT_NAME", "/ping")]);
        let table: &[(&str, &str)] = &[
            // php-fpm's default with fastpm's queue wait: nothing known but the path
            (
                "%R - %u \"%m %r\" %s %{queue_wait}",
                "- - - \"- /ping\" - -",
            ),
            ("%r%Q%q|", "/ping|"),
            ("%l %f", "0 -"),
        ];
        for (format, want) in table {
            assert_eq!(render(format, &p, b"", None), *want, "{format}");
        }
    }

    #[test]
    fn debian_example_and_default_parse() {
        for format in [
            DEFAULT_ACCESS_FORMAT,
            "%R - %u %t \"%m %r%Q%q\" %s %f %{mili}d %{kilo}M %C%%",
            "%{%Y-%m-%dT%H:%M:%S%z}t",
        ] {
            AccessFormat::parse(format).unwrap_or_else(|e| panic!("{format}: {e}"));
        }
        let f = AccessFormat::parse("%{mili}d %C").unwrap();
        assert!(f.needs_cpu() && !f.needs_memory());
    }

    #[test]
    fn errors_table() {
        let table: &[(&str, &str)] = &[
            ("%x", "%x is not a field"),
            ("50%", "lone %"),
            ("%{mili", "missing closing brace"),
            ("%{mili}", "not followed by a field letter"),
            ("%{hours}d", "seconds, mili or micro"),
            ("%{bogus}C", "total, user or system"),
            ("%{giga}M", "bytes, kilo or mega"),
            ("%e", "%e needs the name"),
            ("%{}o", "%o needs the name"),
            ("%{x}s", "%s takes no modifier"),
        ];
        for (format, want) in table {
            let err = AccessFormat::parse(format).expect_err(format);
            assert!(err.to_string().contains(want), "{format}: {err}");
        }
    }
}
