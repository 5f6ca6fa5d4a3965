//! Turning the rounds into the result: medians per scenario, paired per-round ratios against the
//! targets, and the markdown table printed to stdout and written to `target/bench-ping.md`.

use std::fmt::Write as _;

use crate::load::Measurement;

/// One scenario's fate in this run.
pub struct Outcome {
    /// The letter used in ratio names ("b/a").
    pub key: char,
    /// What was measured, for the table.
    pub label: String,
    /// One measurement per round, or why the scenario could not run.
    pub result: Result<Vec<Measurement>, String>,
}

/// A ratio the issue sets a target for.
pub struct RatioSpec {
    pub name: &'static str,
    pub numerator: char,
    pub denominator: char,
    /// The ratio must be at least this.
    pub target: f64,
}

/// The conditions of the run, printed above the tables so a number is never read without them.
pub struct RunInfo {
    pub date: String,
    pub command: String,
    pub clients: usize,
    pub warmup_secs: f64,
    pub secs: f64,
    pub rounds: usize,
    pub workers: usize,
    pub backlog: i32,
    pub machine: String,
    pub php_fpm: String,
    pub fastpm: String,
}

/// Median of a non-empty slice (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

fn find(outcomes: &[Outcome], key: char) -> Option<&Outcome> {
    outcomes.iter().find(|o| o.key == key)
}

/// Requests/s of numerator ÷ denominator for every round both ran: paired, because the two ran
/// minutes apart at most, under the same background noise.
pub fn per_round_ratios(outcomes: &[Outcome], spec: &RatioSpec) -> Result<Vec<f64>, String> {
    let side = |key| match find(outcomes, key).map(|o| &o.result) {
        Some(Ok(rounds)) => Ok(rounds),
        Some(Err(_)) => Err(format!("{key} did not run")),
        None => Err(format!("{key} unknown")),
    };
    let numerator = side(spec.numerator)?;
    let denominator = side(spec.denominator)?;
    Ok(numerator
        .iter()
        .zip(denominator)
        .filter(|(_, d)| d.ok > 0)
        .map(|(n, d)| n.requests_per_sec() / d.requests_per_sec())
        .collect())
}

fn errors_cell(rounds: &[Measurement]) -> String {
    let mut total = Measurement::default();
    for round in rounds {
        for (failure, count) in &round.failures {
            *total.failures.entry(*failure).or_default() += count;
        }
    }
    if total.errors() == 0 {
        return "0".into();
    }
    let kinds: Vec<String> = total
        .failures
        .iter()
        .map(|(failure, count)| format!("{count}× {failure}"))
        .collect();
    format!("{} ({})", total.errors(), kinds.join(", "))
}

fn latency_cell(rounds: &[Measurement], percentile: f64) -> String {
    let values: Vec<f64> = rounds
        .iter()
        .filter_map(|m| m.latency_ms(percentile))
        .collect();
    if values.is_empty() {
        "–".into()
    } else {
        format!("{:.2}", median(&values))
    }
}

/// The whole report as markdown.
pub fn render(info: &RunInfo, outcomes: &[Outcome], ratios: &[RatioSpec]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## ping bench, {}\n", info.date);
    let _ = writeln!(out, "`{}`: {} clients, one connection per request over unix sockets, {} workers per server, backlog {}; each scenario {} s warm-up + {} s measured, {} rounds interleaved (order rotates each round); medians over rounds.\n",
        info.command, info.clients, info.workers, info.backlog, info.warmup_secs, info.secs, info.rounds);
    let _ = writeln!(out, "- machine: {}", info.machine);
    let _ = writeln!(out, "- php-fpm: {}", info.php_fpm);
    let _ = writeln!(out, "- fastpm: {}\n", info.fastpm);
    let _ = writeln!(
        out,
        "| | scenario | req/s | req/s per round | p50 ms | p99 ms | errors |"
    );
    let _ = writeln!(out, "|---|---|---:|---|---:|---:|---|");
    for outcome in outcomes {
        match &outcome.result {
            Ok(rounds) => {
                let rates: Vec<f64> = rounds.iter().map(Measurement::requests_per_sec).collect();
                let per_round: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} | {} | {} | {} | {} |",
                    outcome.key,
                    outcome.label,
                    median(&rates),
                    per_round.join(" / "),
                    latency_cell(rounds, 50.0),
                    latency_cell(rounds, 99.0),
                    errors_cell(rounds)
                );
            }
            Err(why) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | **not run** | {} | | | |",
                    outcome.key,
                    outcome.label,
                    why.lines().next().unwrap_or("").replace('|', "\\|")
                );
            }
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| ratio | median of per-round ratios | per round | target | |"
    );
    let _ = writeln!(out, "|---|---:|---|---:|---|");
    for spec in ratios {
        match per_round_ratios(outcomes, spec) {
            Ok(values) if !values.is_empty() => {
                let value = median(&values);
                let per_round: Vec<String> = values.iter().map(|r| format!("{r:.2}×")).collect();
                let verdict = if value >= spec.target {
                    "met"
                } else {
                    "**below target**"
                };
                let _ = writeln!(
                    out,
                    "| {}/{} {} | {:.2}× | {} | ≥ {:.2}× | {} |",
                    spec.numerator,
                    spec.denominator,
                    spec.name,
                    value,
                    per_round.join(" / "),
                    spec.target,
                    verdict
                );
            }
            Ok(_) => {
                let _ = writeln!(
                    out,
                    "| {}/{} {} | – | no successful round | ≥ {:.2}× | not measured |",
                    spec.numerator, spec.denominator, spec.name, spec.target
                );
            }
            Err(why) => {
                let _ = writeln!(
                    out,
                    "| {}/{} {} | – | {} | ≥ {:.2}× | not measured |",
                    spec.numerator, spec.denominator, spec.name, why, spec.target
                );
            }
        }
    }
    out
}
