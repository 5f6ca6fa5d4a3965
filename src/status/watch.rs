//! `fastpm status --watch` on a terminal: a live view redrawn in place every second — per pool
//! one line with sparklines of the last minute (queue, active workers, queue-wait p99, read
//! from the master's `/history?json`) and the numbers that matter now (from `/status?json&full`),
//! then the pool's busy workers. `q`, Esc or Ctrl-C leaves and gives the terminal back as it was.
//!
//! Why crossterm: raw mode (to read `q` without Enter), the alternate screen (frames overwrite
//! each other instead of scrolling the terminal's history) and cursor moves, correctly undone on
//! exit; writing those escape sequences and termios calls by hand is what the crate maintains.
//!
//! The frame itself is built by pure functions ([`frame`], [`sparkline`], …) from the two JSON
//! answers and the terminal width, so it is table-tested without a terminal. When stdout is
//! not a terminal, `main` prints the status once instead (no escape codes into a file).

use std::io::Write;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, queue, terminal};
use serde_json::Value;

use super::client::{fetch, parse_url, StatusClientError};

/// How often the view is fetched and redrawn.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Seconds of history the sparklines show.
pub const WINDOW: usize = 60;
/// Sparkline levels, lowest to highest.
pub const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The base `http://host:port` of a status URL (the view reads two paths of it).
pub fn base_url(url: &str) -> Result<String, StatusClientError> {
    let target = parse_url(url)?;
    Ok(format!("http://{}", target.authority))
}

/// Downsample `values` (oldest first) to `width` cells, each the maximum of its seconds, drawn
/// on a scale of 0..=`max`; a cell with no known value is a space. Values are right-aligned:
/// fewer seconds than cells leave blank cells on the left.
pub fn sparkline(values: &[Option<f64>], width: usize, max: f64) -> String {
    if width == 0 {
        return String::new();
    }
    let per_cell = values.len().div_ceil(width).max(1);
    let cells: Vec<Option<f64>> = values
        .chunks(per_cell)
        .map(|chunk| chunk.iter().flatten().copied().reduce(f64::max))
        .collect();
    let mut out = " ".repeat(width.saturating_sub(cells.len()));
    for cell in cells.iter().skip(cells.len().saturating_sub(width)) {
        out.push(match cell {
            None => ' ',
            Some(v) if max <= 0.0 || *v <= 0.0 => BARS[0],
            Some(v) => {
                let level = ((v / max) * (BARS.len() - 1) as f64).round() as usize;
                BARS[level.min(BARS.len() - 1)]
            }
        });
    }
    out
}

/// A JSON array of numbers (nulls kept as `None`); empty when absent.
fn series(history: Option<&Value>, key: &str) -> Vec<Option<f64>> {
    history
        .and_then(|h| h.get(key))
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Value::as_f64).collect())
        .unwrap_or_default()
}

fn peak(values: &[Option<f64>]) -> f64 {
    values.iter().flatten().copied().fold(0.0, f64::max)
}

fn num(pool: &Value, key: &str) -> String {
    match pool.get(key) {
        Some(Value::Number(n)) if n.is_f64() => format!("{:.0}", n.as_f64().unwrap_or(0.0)),
        Some(Value::Number(n)) => n.to_string(),
        _ => "-".to_string(),
    }
}

/// Cut `line` to `width` characters.
pub fn fit(line: &str, width: usize) -> String {
    line.chars().take(width).collect()
}

/// The sparklines' width: the three share what the numbers (`fixed` characters) leave of a
/// terminal `width` columns wide, one cell per second at most, 5 at least.
pub fn spark_width(width: usize, fixed: usize) -> usize {
    (width.saturating_sub(fixed) / 3).clamp(5, WINDOW)
}

/// One pool's lines: the summary with its sparklines, then its busy workers.
pub fn pool_lines(pool: &Value, history: Option<&Value>, width: usize) -> Vec<String> {
    let name = pool.get("pool").and_then(Value::as_str).unwrap_or("?");
    let queue = series(history, "listen queue");
    let active = series(history, "active processes");
    let wait = series(history, "queue wait p99 ms");
    let total = pool
        .get("total processes")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let rejected_last_minute: f64 = series(history, "rejected conn").iter().flatten().sum();
    let last_wait = wait
        .iter()
        .rev()
        .flatten()
        .next()
        .map_or("-".to_string(), |w| format!("{w:.0}"));
    let line = |spark: usize| {
        format!(
            "{name:<8} queue {} {:>3}/{:<3} max {:<3} active {} {:>2}/{:<2} p99 {} {:>5}ms rej/min {}",
            sparkline(&queue, spark, peak(&queue).max(1.0)),
            num(pool, "listen queue"),
            num(pool, "listen queue len"),
            num(pool, "max listen queue"),
            sparkline(&active, spark, total.max(peak(&active)).max(1.0)),
            num(pool, "active processes"),
            num(pool, "total processes"),
            sparkline(&wait, spark, peak(&wait).max(1.0)),
            last_wait,
            rejected_last_minute,
        )
    };
    // Measured with empty sparklines: what the numbers take, so the sparklines get the rest.
    let fixed = line(0).chars().count();
    let summary = line(spark_width(width, fixed));
    let mut lines = vec![fit(&summary, width)];
    if let Some(held) = held_line(pool, history, width) {
        lines.push(held);
    }
    let busy: Vec<String> = pool
        .get("processes")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter(|p| p.get("state").and_then(Value::as_str) != Some("Idle"))
                .map(|p| {
                    format!(
                        "{} {} {} {:.1}s",
                        num(p, "pid"),
                        p.get("request method")
                            .and_then(Value::as_str)
                            .unwrap_or("-"),
                        p.get("request uri").and_then(Value::as_str).unwrap_or("-"),
                        p.get("request duration")
                            .and_then(Value::as_f64)
                            .unwrap_or(0.0)
                            / 1e6,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let busy_line = if busy.is_empty() {
        "  busy: none".to_string()
    } else {
        format!("  busy: {}", busy.join(" · "))
    };
    lines.push(fit(&busy_line, width));
    lines
}

/// A pool that has held requests (long-polling, GRIP; DESIGN.md §8): how many now with the
/// last minute's sparkline, and how the holds ended. `None` for a pool that never held one.
fn held_line(pool: &Value, history: Option<&Value>, width: usize) -> Option<String> {
    let max = pool.get("max held requests").and_then(Value::as_u64)?;
    if max == 0 {
        return None;
    }
    let held = series(history, "held requests");
    let line = |spark: usize| {
        format!(
            "  held {} {} max {} channels {} published {} delivered {} timeouts {} gone {}",
            sparkline(&held, spark, peak(&held).max(1.0)),
            num(pool, "held requests"),
            max,
            num(pool, "channels"),
            num(pool, "messages published"),
            num(pool, "messages delivered"),
            num(pool, "held timeouts"),
            num(pool, "held clients gone"),
        )
    };
    let fixed = line(0).chars().count();
    let spark = width.saturating_sub(fixed).clamp(5, WINDOW);
    Some(fit(&line(spark), width))
}

/// The whole frame: a header, then every pool (matched by name with its history).
pub fn frame(
    base: &str,
    status: &Value,
    history: Option<&Value>,
    note: &str,
    width: usize,
) -> Vec<String> {
    let mut lines = vec![
        fit(
            &format!(
                "fastpm status --watch  {base}  last {WINDOW} s, one cell = max  (q quits){note}"
            ),
            width,
        ),
        String::new(),
    ];
    let pools = status.get("pools").and_then(Value::as_array);
    for pool in pools.into_iter().flatten() {
        let name = pool.get("pool").and_then(Value::as_str);
        let hist = history
            .and_then(|h| h.get("pools"))
            .and_then(Value::as_array)
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p.get("pool").and_then(Value::as_str) == name)
            });
        lines.extend(pool_lines(pool, hist, width));
    }
    lines
}

/// The terminal, set up for the view; put back as it was when dropped (also on an error or a
/// panic unwinding through the loop).
struct Screen<W: Write> {
    out: W,
}

impl<W: Write> Screen<W> {
    fn enter(mut out: W) -> std::io::Result<Self> {
        terminal::enable_raw_mode()?;
        let screen_ok = execute!(out, terminal::EnterAlternateScreen, cursor::Hide);
        let screen = Screen { out };
        screen_ok?;
        Ok(screen)
    }

    fn draw(&mut self, lines: &[String]) -> std::io::Result<()> {
        let (_, rows) = terminal::size().unwrap_or((80, 24));
        queue!(self.out, cursor::MoveTo(0, 0))?;
        for (i, line) in lines.iter().take(usize::from(rows)).enumerate() {
            queue!(
                self.out,
                cursor::MoveTo(0, i as u16),
                crossterm::style::Print(line),
                terminal::Clear(terminal::ClearType::UntilNewLine)
            )?;
        }
        queue!(
            self.out,
            cursor::MoveTo(0, lines.len().min(usize::from(rows)) as u16),
            terminal::Clear(terminal::ClearType::FromCursorDown)
        )?;
        self.out.flush()
    }
}

impl<W: Write> Drop for Screen<W> {
    fn drop(&mut self) {
        let _ = execute!(self.out, cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// Whether a key ends the view: q, Esc, Ctrl-C (raw mode turns Ctrl-C into a key).
pub fn is_quit(key: &KeyEvent) -> bool {
    key.kind != KeyEventKind::Release
        && match key.code {
            KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

/// Run the view on the terminal until the user quits. A failed fetch is shown on the header
/// line and retried (the master may be restarting); the terminal is always restored.
pub fn run(url: &str) -> Result<(), StatusClientError> {
    let base = base_url(url)?;
    let status_url = format!("{base}/status?json&full");
    let history_url = format!("{base}/history?json&seconds={WINDOW}");
    // The first fetch fails loudly, before the screen is taken: a wrong URL is an error.
    let mut status: Value = parse(&status_url, fetch(&status_url)?)?;
    let mut screen = Screen::enter(std::io::stdout()).map_err(StatusClientError::Output)?;
    loop {
        let history = fetch(&history_url)
            .ok()
            .and_then(|body| serde_json::from_str::<Value>(&body).ok());
        let note = if history.is_none() {
            "  (no /history here)"
        } else {
            ""
        };
        let (cols, _) = terminal::size().unwrap_or((80, 24));
        let lines = frame(&base, &status, history.as_ref(), note, usize::from(cols));
        screen.draw(&lines).map_err(StatusClientError::Output)?;
        let next = Instant::now() + INTERVAL;
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            if !event::poll(left).map_err(StatusClientError::Output)? {
                break;
            }
            match event::read().map_err(StatusClientError::Output)? {
                Event::Key(key) if is_quit(&key) => return Ok(()),
                Event::Resize(..) => break,
                _ => {}
            }
        }
        status = match fetch(&status_url).and_then(|body| parse(&status_url, body)) {
            Ok(status) => status,
            Err(err) => {
                let lines = [fit(
                    &format!("fastpm status --watch: {err}; retrying (q quits)"),
                    usize::from(cols),
                )];
                screen.draw(&lines).map_err(StatusClientError::Output)?;
                continue;
            }
        };
    }
}

fn parse(url: &str, body: String) -> Result<Value, StatusClientError> {
    serde_json::from_str(&body).map_err(|e| StatusClientError::Malformed {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sparkline_table() {
        let s = |v: &[Option<f64>]| v.to_vec();
        let table: &[(Vec<Option<f64>>, usize, f64, &str)] = &[
            (s(&[]), 4, 10.0, "    "),
            (s(&[Some(0.0), Some(10.0)]), 2, 10.0, "▁█"),
            (s(&[Some(0.0), Some(5.0), Some(10.0)]), 3, 10.0, "▁▅█"),
            // a gap second is blank
            (s(&[Some(10.0), None, Some(10.0)]), 3, 10.0, "█ █"),
            // fewer seconds than cells: right-aligned
            (s(&[Some(10.0)]), 3, 10.0, "  █"),
            // 6 seconds in 3 cells: each cell the max of 2
            (
                s(&[Some(0.0), Some(10.0), Some(0.0), Some(0.0), None, Some(5.0)]),
                3,
                10.0,
                "█▁▅",
            ),
            // above the scale: the top bar, not a panic
            (s(&[Some(99.0)]), 1, 10.0, "█"),
            (s(&[Some(3.0)]), 1, 0.0, "▁"),
            (s(&[Some(3.0)]), 0, 10.0, ""),
        ];
        for (values, width, max, want) in table {
            assert_eq!(
                sparkline(values, *width, *max),
                *want,
                "{values:?} {width} {max}"
            );
        }
    }

    #[test]
    fn spark_width_table() {
        for (cols, fixed, want) in [
            (0, 70, 5),
            (80, 70, 5),
            (120, 70, 16),
            (250, 70, 60),
            (400, 70, 60),
        ] {
            assert_eq!(spark_width(cols, fixed), want, "{cols}");
        }
    }

    #[test]
    fn quit_keys() {
        let key = |code, modifiers| KeyEvent::new(code, modifiers);
        let table = [
            (key(KeyCode::Char('q'), KeyModifiers::NONE), true),
            (key(KeyCode::Esc, KeyModifiers::NONE), true),
            (key(KeyCode::Char('c'), KeyModifiers::CONTROL), true),
            (key(KeyCode::Char('c'), KeyModifiers::NONE), false),
            (key(KeyCode::Enter, KeyModifiers::NONE), false),
        ];
        for (k, want) in table {
            assert_eq!(is_quit(&k), want, "{k:?}");
        }
    }

    #[test]
    fn a_pool_that_held_requests_gets_a_held_line() {
        let status = json!({"pools": [{
            "pool": "lp", "held requests": 120, "max held requests": 300, "channels": 2,
            "messages published": 5, "messages delivered": 400, "held timeouts": 7,
            "held clients gone": 1, "processes": []}]});
        let history = json!({"pools": [{"pool": "lp", "t": [1, 2], "held requests": [300, 120]}]});
        let lines = frame("http://h:1", &status, Some(&history), "", 120);
        let held = &lines[3];
        assert!(held.starts_with("  held "), "{lines:?}");
        assert!(held.contains("█"), "{held}");
        assert!(
            held.ends_with(" 120 max 300 channels 2 published 5 delivered 400 timeouts 7 gone 1"),
            "{held}"
        );
        assert!(held.chars().count() <= 120, "{held}");
        assert_eq!(lines[4], "  busy: none");
    }

    #[test]
    fn frame_shows_pools_sparklines_and_busy_workers() {
        let status = json!({"pools": [{
        "pool": "www", "listen queue": 38, "listen queue len": 64, "max listen queue": 40,
        "active processes": 2, "total processes": 2, "queue wait p99 ms": 1800.5,
        "processes": [
            {"pid": 11, "state": "Running", "request method": "GET",
             "request uri": "/sleep?ms=100", "request duration": 100000},
            {"pid": 12, "state": "Idle", "request method": "GET",
             "request uri": "/", "request duration": 5}
        ]}]});
        let history = json!({"pools": [{
            "pool": "www", "t": [1, 2, 3], "listen queue": [0, 38, null],
            "listen queue len": 64, "active processes": [0, 2, 2],
            "queue wait p99 ms": [null, 1800.5, null], "rejected conn": [0, 3, 1]}]});
        let lines = frame("http://h:1", &status, Some(&history), "", 120);
        assert!(
            lines[0].starts_with("fastpm status --watch  http://h:1"),
            "{lines:?}"
        );
        let pool = &lines[2];
        assert!(pool.starts_with("www"), "{pool}");
        assert!(pool.contains("█"), "{pool}");
        assert!(pool.contains("38/64"), "{pool}");
        assert!(pool.contains("rej/min 4"), "{pool}");
        assert!(pool.contains("1800ms") || pool.contains("1801ms"), "{pool}");
        assert!(pool.chars().count() <= 120, "{pool}");
        assert_eq!(lines[3], "  busy: 11 GET /sleep?ms=100 0.1s");
        // A pool that never held a request has no held line.
        assert!(!lines.iter().any(|l| l.contains("held")), "{lines:?}");
        // Narrow terminal: every line fits.
        for line in frame("http://h:1", &status, Some(&history), "", 40) {
            assert!(line.chars().count() <= 40, "{line}");
        }
        // No history (an old master): numbers still shown, blank sparklines.
        let lines = frame("http://h:1", &status, None, "", 120);
        assert!(
            lines[2].contains("38/64") && !lines[2].contains('█'),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn base_url_keeps_the_authority() {
        assert_eq!(
            base_url("http://127.0.0.1:9180/status?full").unwrap(),
            "http://127.0.0.1:9180"
        );
        assert!(base_url("https://x/").is_err());
    }
}
