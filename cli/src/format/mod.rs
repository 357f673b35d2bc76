//! Human-readable sizes, durations and tables, spelled as docker spells them, and the
//! `--format` templates of docker's list and inspect commands.

mod template;

pub use template::{ListFormat, Template};

use chrono::{DateTime, Utc};

/// A size in decimal units with three significant digits: `4.86kB`, `1.23MB`, `812B`.
pub fn size(bytes: u64) -> String {
    scaled(bytes, 1000.0, ["B", "kB", "MB", "GB", "TB", "PB", "EB"], 3)
}

/// A size in binary units with four significant digits, as docker's `info` writes memory:
/// `3.832GiB`, `512MiB`, `1023B`.
pub fn binary_size(bytes: u64) -> String {
    scaled(bytes, 1024.0, ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"], 4)
}

/// `bytes` in the largest unit (each `step` times the last) that keeps the number at least
/// 1, with `significant` digits and no trailing zeros, as go-units writes sizes.
fn scaled(bytes: u64, step: f64, units: [&str; 7], significant: usize) -> String {
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= step && i < units.len() - 1 {
        v /= step;
        i += 1;
    }
    let whole_digits = if v < 1.0 { 1 } else { (v.log10().floor() as usize) + 1 };
    let digits = significant.saturating_sub(whole_digits);
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s };
    format!("{s}{}", units[i])
}

/// A time as Go prints a `time.Time`, which docker's `ps` and `images` show for
/// `{{.CreatedAt}}`: `2026-12-06 07:30:44 +0000 UTC`.
pub fn go_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S %z UTC").to_string()
}

/// How long ago `t` was: `Less than a second ago`, `3 minutes ago`, `2 weeks ago`.
pub fn since(t: Option<DateTime<Utc>>) -> String {
    let Some(t) = t else { return "N/A".into() };
    let secs = (Utc::now() - t).num_seconds();
    if secs < 0 {
        return "In the future".into();
    }
    format!("{} ago", duration(secs as u64))
}

/// `secs` in words, as docker's go-units `HumanDuration` writes them: minutes counted down,
/// hours rounded to the nearest, then days, weeks, months and years counted down from hours.
fn duration(secs: u64) -> String {
    let minutes = secs / 60;
    let hours = (secs + 1800) / 3600;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

/// docker's tables (text/tabwriter with a minimum cell width of 10 and a padding of 3): a
/// column is as wide as its widest cell plus 3, and at least 10.
const MIN_CELL: usize = 10;
const PADDING: usize = 3;

/// Pads columns to a table, docker style: [`PADDING`] spaces after each cell, [`MIN_CELL`] wide at least.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat((widths[c] + PADDING).max(MIN_CELL) - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_dockers() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(812), "812B");
        assert_eq!(size(4_860), "4.86kB");
        assert_eq!(size(1_234_567), "1.23MB");
        assert_eq!(size(12_300_000), "12.3MB");
        assert_eq!(size(123_000_000), "123MB");
        assert_eq!(size(2_000_000_000), "2GB");
    }

    #[test]
    fn binary_sizes_read_like_dockers_info() {
        assert_eq!(binary_size(1023), "1023B");
        assert_eq!(binary_size(512 << 20), "512MiB");
        // docker's `Total Memory: 3.832GiB` for MemTotal 4,114,542,592.
        assert_eq!(binary_size(4_114_542_592), "3.832GiB");
        assert_eq!(binary_size(16_740_000_000), "15.59GiB");
    }

    #[test]
    fn durations_read_like_dockers() {
        assert_eq!(duration(0), "Less than a second");
        assert_eq!(duration(1), "1 second");
        assert_eq!(duration(2), "2 seconds");
        assert_eq!(duration(90), "About a minute");
        assert_eq!(duration(600), "10 minutes");
        assert_eq!(duration(50 * 60), "50 minutes");
        assert_eq!(duration(89 * 60), "About an hour");
        assert_eq!(duration(100 * 60), "2 hours");
        assert_eq!(duration(23 * 3600 + 50 * 60), "24 hours");
        assert_eq!(duration(7200), "2 hours");
        assert_eq!(duration(3 * 86400), "3 days");
        assert_eq!(duration(21 * 86400), "3 weeks");
        assert_eq!(duration(59 * 86400), "8 weeks");
        assert_eq!(duration(400 * 86400), "13 months");
        assert_eq!(duration(800 * 86400), "2 years");
    }

    #[test]
    fn table_pads_columns() {
        let t = table(&[vec!["A".into(), "BB".into()], vec!["CCC".into(), "D".into()]]);
        assert_eq!(t, "A         BB\nCCC       D\n", "at least 10 wide, as docker's tabwriter");
        let wide = table(&[vec!["REPOSITORY-NAME".into(), "TAG".into(), "X".into()]]);
        assert_eq!(wide, "REPOSITORY-NAME   TAG       X\n");
    }
}
