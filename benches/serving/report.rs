//! The results as Markdown, written between two markers in
//! `docs/BENCHMARKS.md` so the prose around them survives a rerun.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::load::Outcome;
use crate::{Results, micros, ms};

pub const BEGIN: &str = "<!-- results:begin (written by bench/run.sh) -->";
pub const END: &str = "<!-- results:end -->";

/// Targets, from the performance brief.
const THROUGHPUT_FLOOR: f64 = 0.85;
const P99_CEILING: f64 = 1.25;
const RSS_CEILING_KIB: u64 = 20 * 1024;
const REQUESTS_FOR_RSS: u64 = 1_000_000;
const READINESS_ALLOWANCE: Duration = Duration::from_millis(50);

/// Where the figures came from.
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory: String,
    pub kernel: String,
    pub rustc: String,
    pub date: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let value = |text: &str, key: &str| {
            text.lines()
                .find(|line| line.starts_with(key))
                .and_then(|line| line.split_once(':'))
                .map(|(_, value)| value.trim().to_owned())
                .unwrap_or_else(|| "unknown".into())
        };
        let rustc = std::process::Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpu: value(&cpuinfo, "model name"),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory: value(&meminfo, "MemTotal"),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|text| text.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
            rustc,
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }
}

pub struct Settings {
    pub oha: String,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: usize,
    pub rounds: usize,
    pub rate: u32,
}

/// Replaces what lies between the markers in `path`, or appends a marked
/// section when there are none yet.
pub fn write(path: &Path, section: &str) -> std::io::Result<()> {
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let marked = format!("{BEGIN}\n{section}\n{END}");
    let updated = match (current.find(BEGIN), current.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!(
                "{}{marked}{}",
                &current[..begin],
                &current[end + END.len()..]
            )
        }
        _ => format!("{current}\n## Results\n\n{marked}\n"),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, updated)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn row(out: &mut String, label: &str, outcome: &Outcome) {
    let _ = writeln!(
        out,
        "| {label} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {} |",
        outcome.requests_per_second,
        ms(outcome.p50),
        ms(outcome.p99),
        ms(outcome.p999),
        ms(outcome.slowest),
        micros(outcome.cpu_per_request),
        errors(outcome),
    );
}

fn errors(outcome: &Outcome) -> String {
    if outcome.errors == 0 {
        return "0".into();
    }
    let kinds: Vec<String> = outcome
        .error_kinds
        .iter()
        .map(|(kind, count)| format!("{count} {kind}"))
        .collect();
    format!("{} ({})", outcome.errors, kinds.join(", "))
}

const TABLE_HEAD: &str = "| run | requests/s | p50 ms | p99 ms | p99.9 ms | slowest ms | server CPU µs/request | errors |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |";

pub fn render(results: &Results) -> String {
    let mut out = String::new();
    let machine = &results.machine;
    let settings = &results.settings;
    let _ = writeln!(
        out,
        "Run {}: {} ({} cores), {} memory, Linux {}, {}, {}. Load generator and servers share the cores. Each run: {} s after a {} s warm-up.\n",
        machine.date,
        machine.cpu,
        machine.cores,
        machine.memory,
        machine.kernel,
        machine.rustc,
        settings.oha,
        settings.duration.as_secs(),
        settings.warmup.as_secs(),
    );

    let find = |label: &str| {
        results
            .steady
            .iter()
            .find(|measured| measured.label == label)
            .map(|measured| &measured.outcome)
    };
    let (Some(base_tcp), Some(ours_tcp), Some(base_unix), Some(ours_unix)) = (
        find("baseline, TCP"),
        find("assumed, TCP"),
        find("baseline, Unix socket"),
        find("assumed, Unix socket"),
    ) else {
        return out;
    };
    let throughput = ours_tcp.requests_per_second / base_tcp.requests_per_second;
    let p99 = ours_tcp.p99.as_secs_f64() / base_tcp.p99.as_secs_f64();
    let unix_throughput = ours_unix.requests_per_second / base_unix.requests_per_second;
    let unix_p99 = ours_unix.p99.as_secs_f64() / base_unix.p99.as_secs_f64();
    let all_errors: u64 = results
        .steady
        .iter()
        .map(|measured| measured.outcome.errors)
        .chain(results.clients.iter().map(|(_, a, b)| a.errors + b.errors))
        .chain([results.refresh.outcome.errors])
        .chain(results.roles.runs.iter().map(|run| run.outcome.errors))
        .sum();
    let readiness = &results.readiness;
    let readiness_overhead = readiness
        .sts_round_trip
        .map(|trip| readiness.first_credential.saturating_sub(trip));
    let refresh_p99 = results.refresh.outcome.p99.as_secs_f64() / ours_tcp.p99.as_secs_f64();
    let refresh_ok = results.refresh.refreshes >= 1
        && results.refresh.assume_role_calls == results.refresh.refreshes;

    let _ = writeln!(out, "### Targets\n");
    let _ = writeln!(out, "| target | measured | verdict |\n| --- | --- | --- |");
    let _ = writeln!(
        out,
        "| TCP throughput ≥ {THROUGHPUT_FLOOR}× baseline | {throughput:.2}× | {} |",
        verdict(throughput >= THROUGHPUT_FLOOR)
    );
    let _ = writeln!(
        out,
        "| TCP p99 ≤ {P99_CEILING}× baseline p99 | {p99:.2}× ({:.3} ms vs {:.3} ms) | {} |",
        ms(ours_tcp.p99),
        ms(base_tcp.p99),
        verdict(p99 <= P99_CEILING)
    );
    let _ = writeln!(
        out,
        "| zero errors | {all_errors} in every run together | {} |",
        verdict(all_errors == 0)
    );
    let _ = writeln!(
        out,
        "| RSS ≤ {} after {} requests | {} after {} requests at {} connections | {} |",
        mib(RSS_CEILING_KIB),
        REQUESTS_FOR_RSS,
        mib(results.rss_steady_kib),
        results.served_steady,
        settings.connections,
        verdict(
            results.rss_steady_kib <= RSS_CEILING_KIB && results.served_steady >= REQUESTS_FOR_RSS
        )
    );
    let _ = match readiness_overhead {
        Some(overhead) => writeln!(
            out,
            "| ready within one STS round trip + {} ms | {:.1} ms = {:.1} ms round trip + {:.1} ms | {} |",
            READINESS_ALLOWANCE.as_millis(),
            ms(readiness.first_credential),
            ms(readiness.first_credential - overhead),
            ms(overhead),
            verdict(overhead <= READINESS_ALLOWANCE)
        ),
        None => writeln!(
            out,
            "| ready within one STS round trip + {} ms | {:.1} ms; the round trip was not in the log | unknown |",
            READINESS_ALLOWANCE.as_millis(),
            ms(readiness.first_credential),
        ),
    };
    let _ = writeln!(
        out,
        "| refresh under load: p99 does not move, one AssumeRole per refresh | p99 {refresh_p99:.2}× the steady run's; {} refresh(es), {} AssumeRole call(s) | {} |",
        results.refresh.refreshes,
        results.refresh.assume_role_calls,
        verdict(refresh_ok && refresh_p99 <= P99_CEILING)
    );

    let _ = writeln!(
        out,
        "\n### A cached credential, {} connections\n",
        settings.connections
    );
    let _ = writeln!(out, "{TABLE_HEAD}");
    for measured in &results.steady {
        row(&mut out, &measured.label, &measured.outcome);
    }
    let _ = writeln!(
        out,
        "\nMedians of {} alternating rounds. Each round's requests/s and p99 ms:\n",
        settings.rounds
    );
    for measured in &results.steady {
        let figures: Vec<String> = measured
            .rounds
            .iter()
            .map(|run| format!("{:.0} / {:.3}", run.requests_per_second, ms(run.p99)))
            .collect();
        let _ = writeln!(out, "- {}: {}", measured.label, figures.join(", "));
    }
    let _ = writeln!(
        out,
        "\nassumed / baseline: TCP {throughput:.2}× the throughput, {p99:.2}× the p99, {:.2}× the CPU per request; Unix socket {unix_throughput:.2}× the throughput, {unix_p99:.2}× the p99.\n",
        ours_tcp.cpu_per_request.as_secs_f64() / base_tcp.cpu_per_request.as_secs_f64().max(1e-9)
    );

    let (base_rate, ours_rate) = &results.fixed_rate;
    let _ = writeln!(
        out,
        "### Below saturation: {} requests/s, TCP, {} connections\n",
        settings.rate, settings.connections
    );
    let _ = writeln!(out, "{TABLE_HEAD}");
    row(&mut out, "baseline", base_rate);
    row(&mut out, "assumed", ours_rate);
    let _ = writeln!(
        out,
        "\nMedians of {} alternating rounds. assumed / baseline: {:.2}× the p99, {:.2}× the p99.9.\n",
        settings.rounds,
        ours_rate.p99.as_secs_f64() / base_rate.p99.as_secs_f64(),
        ours_rate.p999.as_secs_f64() / base_rate.p999.as_secs_f64(),
    );
    let _ = writeln!(
        out,
        "The daemon wrote {} audit lines ({} of log) for {} requests from the load generator, plus the driver's own probes.\n",
        results.audit_lines,
        mib(results.log_bytes / 1024),
        results.requests_served
    );

    let _ = writeln!(out, "### Memory and idle cost\n");
    let _ = writeln!(out, "| measure | value |\n| --- | --- |");
    let _ = writeln!(out, "| RSS when ready | {} |", mib(results.rss_ready_kib));
    let _ = writeln!(
        out,
        "| RSS after {} requests at {} connections | {} |",
        results.served_steady,
        settings.connections,
        mib(results.rss_steady_kib)
    );
    let _ = writeln!(
        out,
        "| RSS after {} requests, 1 and 1024 connections included | {} |",
        results.requests_served,
        mib(results.rss_after_kib)
    );
    let idle = &results.idle;
    let _ = writeln!(
        out,
        "| CPU over {} s idle | {:.1} ms ({:.4} % of one core) |",
        idle.watched.as_secs(),
        ms(idle.cpu),
        idle.cpu.as_secs_f64() / idle.watched.as_secs_f64() * 100.0
    );
    let _ = writeln!(
        out,
        "| context switches over {} s idle, all threads | {} |",
        idle.watched.as_secs(),
        idle.context_switches
    );
    let _ = writeln!(
        out,
        "| spawn to first credential (Unix socket) | {:.1} ms |",
        ms(readiness.first_credential)
    );
    if let Some(trip) = readiness.sts_round_trip {
        let _ = writeln!(
            out,
            "| of which the first AssumeRole (the daemon's log) | {:.1} ms |",
            ms(trip)
        );
    }

    let _ = writeln!(out, "\n### Clients (TCP)\n");
    let _ = writeln!(out, "{TABLE_HEAD}");
    for (connections, base, ours) in &results.clients {
        row(&mut out, &format!("baseline, {connections} conn."), base);
        row(&mut out, &format!("assumed, {connections} conn."), ours);
    }
    if let (Some(base), Some(ours)) = (find("baseline, TCP"), find("assumed, TCP")) {
        row(
            &mut out,
            &format!("baseline, {} conn. (above)", settings.connections),
            base,
        );
        row(
            &mut out,
            &format!("assumed, {} conn. (above)", settings.connections),
            ours,
        );
    }

    let refresh = &results.refresh;
    let _ = writeln!(
        out,
        "\n### Refresh under load (TCP, {} connections, {} s sessions)\n",
        settings.connections,
        crate::SHORT_SESSION.as_secs()
    );
    let _ = writeln!(out, "{TABLE_HEAD}");
    row(&mut out, "assumed, refreshing", &refresh.outcome);
    row(&mut out, "assumed, steady (above)", ours_tcp);
    let _ = writeln!(
        out,
        "\nDuring the measured window the role was refreshed {} time(s) and the stand-in counted {} AssumeRole call(s) ({} rejected code(s)).",
        refresh.refreshes, refresh.assume_role_calls, refresh.codes_rejected
    );

    let roles = &results.roles;
    let mode = if roles.session_mode {
        "session-token mode (one GetSessionToken, roles chained)"
    } else {
        "direct mode (this daemon has no session-token mode: each role needs its own MFA code, one per 30 s step, so fewer roles are measured)"
    };
    let _ = writeln!(
        out,
        "\n### Roles (TCP, {} connections, requests spread over every role), {mode}\n",
        settings.connections
    );
    let _ = writeln!(
        out,
        "| roles | all usable | requests/s | p50 ms | p99 ms | p99.9 ms | errors | RSS ready | RSS after |\n| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
    );
    for run in &roles.runs {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
            run.roles,
            if run.all_usable { "yes" } else { "no" },
            run.outcome.requests_per_second,
            ms(run.outcome.p50),
            ms(run.outcome.p99),
            ms(run.outcome.p999),
            errors(&run.outcome),
            mib(run.rss_ready_kib),
            mib(run.rss_after_kib),
        );
    }
    out
}
