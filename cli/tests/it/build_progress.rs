//! `berth build --progress plain` reads as BuildKit's plain log: each step a block opened by
//! a blank line and `#N NAME`, its cache-miss reason under its header, numbers 1, 2, 3 with
//! no gaps for steps that print nothing, output times counted from the step's own start.

use crate::util::{build_store, p, Berth};

fn plain_build(b: &Berth, ctx: &std::path::Path) -> String {
    let out = b.output(&["build", "--progress", "plain", "-t", "progress:1", &p(ctx)]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{log}");
    log
}

/// The step number of a `#N ...` line (0 for build-level notes), if it is one.
fn number(line: &str) -> Option<usize> {
    line.strip_prefix('#')?.split(' ').next()?.parse().ok()
}

/// The seconds of a `#N 1.234 TEXT` output line whose text is `text`.
fn time_of(log: &str, text: &str) -> f64 {
    log.lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(' ')?;
            let (t, what) = rest.split_once(' ')?;
            (what == text).then(|| t.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no output line {text:?} in:\n{log}"))
}

/// Checks the block structure every plain log must have; returns the headers by number.
fn check_blocks(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut headers: Vec<String> = Vec::new();
    let mut open: Option<usize> = None;
    for (i, line) in lines.iter().enumerate() {
        let Some(n) = number(line).filter(|n| *n > 0) else {
            open = None;
            continue;
        };
        if open != Some(n) {
            // A block opens with a blank line and its header.
            assert!(i == 0 || lines[i - 1].is_empty(), "no blank line before {line:?} in:\n{log}");
            let name = line.split_once(' ').map(|(_, s)| s.to_owned()).unwrap_or_default();
            assert!(name.starts_with('['), "a block must open with its header, got {line:?} in:\n{log}");
            if n > headers.len() {
                // Numbers are given in order, with no gaps.
                assert_eq!(n, headers.len() + 1, "step numbers jumped at {line:?} in:\n{log}");
                headers.push(name);
            }
            open = Some(n);
        }
    }
    headers
}

#[test]
fn plain_progress_orders_blocks_numbers_steps_and_times_output_as_buildkit() {
    let Some(b) = build_store() else { return };
    let ctx = tempfile::tempdir().unwrap();
    let dockerfile = "FROM busybox\nENV A=1\nRUN echo first && sleep 1.2 && echo second\nARG X=1\n\
                      LABEL l=1\nWORKDIR /w\nRUN echo third\n";
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let log = plain_build(&b, ctx.path());
    let headers = check_blocks(&log);
    let runs: Vec<&String> = headers.iter().filter(|h| h.contains("RUN echo")).collect();
    assert_eq!(runs.len(), 2, "{log}");
    // Output times count from the step's start: `third` comes right after its step began,
    // though the build had been running the first RUN's 1.2 s sleep before.
    assert!(time_of(&log, "second") >= 1.1, "{log}");
    assert!(time_of(&log, "third") < 1.0, "in-step times count from the build's start:\n{log}");
    // Every cache-miss reason comes after its own step's header, inside its block.
    let lines: Vec<&str> = log.lines().collect();
    let mut misses = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.contains(" cache miss: ") {
            misses += 1;
            let n = number(line).unwrap();
            let header = lines[..i].iter().rposition(|l| l.is_empty()).map(|b| lines[b + 1]);
            assert_eq!(header.and_then(number), Some(n), "{line:?} is not in its step's block:\n{log}");
        }
    }
    assert!(misses >= 2, "a first build says why its steps missed:\n{log}");

    // A change to the last step: earlier steps are CACHED, the changed one missed, numbers still 1, 2, 3...
    let changed = dockerfile.replace("echo third", "echo fourth");
    std::fs::write(ctx.path().join("Dockerfile"), changed).unwrap();
    let log = plain_build(&b, ctx.path());
    let headers = check_blocks(&log);
    let last = headers.len();
    assert!(headers[last - 1].contains("RUN echo fourth"), "{log}");
    let block: Vec<&str> = log.lines().filter(|l| number(l) == Some(last)).collect();
    assert!(block[0].ends_with("RUN echo fourth"), "{log}");
    assert!(block[1].starts_with(&format!("#{last} cache miss: ")), "the reason must follow the header:\n{log}");
    assert_eq!(block.last().map(|l| l.split(' ').nth(1)), Some(Some("DONE")), "{log}");
    assert_eq!(log.matches(" CACHED").count(), last - 1, "{log}");
}
