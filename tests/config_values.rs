//! Value syntaxes of the config: durations, octal modes, every word-valued setting, and the
//! byte offset → line:column conversion every error relies on.

use std::time::Duration;

use fastpm::config::duration::{format_duration, parse_duration};
use fastpm::config::mode::{format_mode, parse_mode};
use fastpm::config::*;

#[test]
fn durations_parse() {
    let ok: &[(&str, Duration)] = &[
        ("500ms", Duration::from_millis(500)),
        ("30s", Duration::from_secs(30)),
        ("2m", Duration::from_secs(120)),
        ("1h", Duration::from_secs(3600)),
        ("0s", Duration::ZERO),
        ("0ms", Duration::ZERO),
        ("0", Duration::ZERO),
        ("1ms", Duration::from_millis(1)),
        ("90s", Duration::from_secs(90)),
    ];
    for (text, want) in ok {
        assert_eq!(parse_duration(text), Ok(*want), "{text:?}");
    }
    let bad: &[(&str, &str)] = &[
        ("", "invalid duration \"\""),
        ("10", "missing unit"),
        ("s", "invalid duration \"s\""),
        ("1.5s", "unknown unit \".5s\""),
        ("10sec", "unknown unit \"sec\""),
        ("10 s", "unknown unit \" s\""),
        ("-1s", "invalid duration \"-1s\""),
        ("1d", "unknown unit \"d\""),
        ("99999999999999999999s", "too large"),
        ("18446744073709552h", "too large"),
    ];
    for (text, fragment) in bad {
        let err = parse_duration(text).expect_err(text);
        assert!(err.contains(fragment), "{text:?}: {err}");
    }
}

#[test]
fn durations_format_round_trip() {
    let table: &[(Duration, &str)] = &[
        (Duration::ZERO, "0s"),
        (Duration::from_millis(5), "5ms"),
        (Duration::from_millis(1500), "1500ms"),
        (Duration::from_secs(30), "30s"),
        (Duration::from_secs(90), "90s"),
        (Duration::from_secs(120), "2m"),
        (Duration::from_secs(7200), "2h"),
    ];
    for (duration, text) in table {
        assert_eq!(format_duration(*duration), *text);
        assert_eq!(parse_duration(text), Ok(*duration));
    }
}

#[test]
fn modes() {
    let ok: &[(&str, u32)] = &[
        ("0660", 0o660),
        ("660", 0o660),
        ("0o600", 0o600),
        ("0777", 0o777),
        ("0", 0),
        ("0000", 0),
    ];
    for (text, want) in ok {
        assert_eq!(parse_mode(text), Ok(*want), "{text:?}");
        assert_eq!(parse_mode(&format_mode(*want)), Ok(*want));
    }
    let bad: &[(&str, &str)] = &[
        ("", "invalid mode"),
        ("0668", "invalid mode"),
        ("rw-rw----", "invalid mode"),
        ("0x1ff", "invalid mode"),
        ("1777", "above 0777"),
        ("4660", "above 0777"),
        ("07777", "invalid mode"),
        ("00660", "invalid mode"),
        ("-660", "invalid mode"),
    ];
    for (text, fragment) in bad {
        let err = parse_mode(text).expect_err(text);
        assert!(err.contains(fragment), "{text:?}: {err}");
    }
    assert_eq!(format_mode(0o660), "0660");
    assert_eq!(format_mode(0o7), "0007");
}

/// Every word of every enum parses to the variant whose Display gives the same word back,
/// and a bad word lists all of them in order.
fn check_words<E: ConfigWord + std::fmt::Display + std::fmt::Debug + PartialEq>(expected: &[&str]) {
    let words: Vec<&str> = E::WORDS.iter().map(|(w, _)| *w).collect();
    assert_eq!(words, expected);
    for (word, value) in E::WORDS {
        assert_eq!(E::parse_word(word), Ok(*value));
        assert_eq!(value.to_string(), *word);
    }
    let err = E::parse_word("Bogus").unwrap_err();
    assert_eq!(
        err,
        format!(
            "unknown value \"Bogus\", expected one of {}",
            expected.join(", ")
        )
    );
    // Spellings are exact: no case folding.
    let upper = expected[0].to_uppercase();
    assert!(E::parse_word(&upper).is_err());
}

#[test]
fn every_enum() {
    check_words::<WorkerKind>(&["process", "thread"]);
    check_words::<AcceptLock>(&["mutex", "fcntl", "flock", "none"]);
    check_words::<PmKind>(&["static", "dynamic", "ondemand"]);
    check_words::<AppKind>(&["php", "cgi", "exec", "hello", "echo", "sleep", "longpoll"]);
    check_words::<OverloadPolicy>(&["none", "deadline", "codel"]);
    check_words::<LogLevel>(&["error", "warn", "info", "debug", "trace"]);
    check_words::<LogFormat>(&["text", "json"]);
}

#[test]
fn line_columns() {
    let text = "ab\ncdé f\n\nx";
    let table: &[(usize, (usize, usize))] = &[
        (0, (1, 1)),
        (1, (1, 2)),
        (2, (1, 3)),
        (3, (2, 1)),
        (5, (2, 3)),
        (7, (2, 4)), // after the two-byte é: column counts characters
        (6, (2, 3)), // inside é: clamped back to its start
        (10, (3, 1)),
        (11, (4, 1)),
        (12, (4, 2)),
        (99, (4, 2)), // past the end: clamped
    ];
    for (offset, want) in table {
        assert_eq!(line_column(text, *offset), *want, "offset {offset}");
    }
}

#[test]
fn clean_paths() {
    let table: &[(&str, &str)] = &[
        ("/a/b/../c", "/a/c"),
        ("/a/./b/", "/a/b"),
        ("/..", "/"),
        ("/a/b/../../..", "/"),
        ("a/../..", ".."),
        ("./", "."),
    ];
    for (input, want) in table {
        assert_eq!(
            clean_path(std::path::Path::new(input)),
            std::path::PathBuf::from(want),
            "{input}"
        );
    }
}
