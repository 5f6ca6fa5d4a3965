//! Which app a pool runs, decided once at start: a pure choice plus the factory that builds one
//! app value per worker.

use crate::app::{App, Echo, Hello, Sleep};
use crate::config::AppKind;

/// The app a pool's workers will run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Hello,
    Echo,
    Sleep,
}

/// Why a configured app kind cannot run in this build.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppError {
    #[error("pool {pool}: app kind \"{kind}\" is not available in this build yet (available: hello, echo, sleep)")]
    NotAvailable { pool: String, kind: String },
}

/// Pick the app for `kind`. The embedded default asks for `php` and promises the built-in `hello`
/// when php-cgi cannot be used; `fallback_allowed` says the config is the embedded default.
/// Returns the choice and, when it differs from what was asked, the reason to log.
pub fn choose(
    pool: &str,
    kind: AppKind,
    php_cgi_found: bool,
    fallback_allowed: bool,
) -> Result<(Choice, Option<String>), AppError> {
    match kind {
        AppKind::Hello => Ok((Choice::Hello, None)),
        AppKind::Echo => Ok((Choice::Echo, None)),
        AppKind::Sleep => Ok((Choice::Sleep, None)),
        AppKind::Php if fallback_allowed => {
            let why = if php_cgi_found {
                "php-cgi is on PATH, but this build does not run PHP yet"
            } else {
                "php-cgi is not on PATH"
            };
            Ok((
                Choice::Hello,
                Some(format!("pool {pool}: serving the built-in hello app: {why}")),
            ))
        }
        other => Err(AppError::NotAvailable {
            pool: pool.to_string(),
            kind: other.to_string(),
        }),
    }
}

/// Build one worker's app.
pub fn build(choice: &Choice, pool: &str) -> Box<dyn App> {
    match choice {
        Choice::Hello => Box::new(Hello::new(pool)),
        Choice::Echo => Box::new(Echo),
        Choice::Sleep => Box::new(Sleep),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_table() {
        assert_eq!(choose("p", AppKind::Hello, false, false), Ok((Choice::Hello, None)));
        assert_eq!(choose("p", AppKind::Sleep, true, true), Ok((Choice::Sleep, None)));
        let (c, why) = choose("p", AppKind::Php, false, true).unwrap();
        assert_eq!(c, Choice::Hello);
        assert!(why.unwrap().contains("not on PATH"));
        assert!(choose("p", AppKind::Php, true, false).is_err());
        assert!(choose("p", AppKind::Cgi, true, true).is_err());
    }
}
