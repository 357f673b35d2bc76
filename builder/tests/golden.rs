//! Golden parser cases: every folder under fixtures/dockerfile/ holds a `Dockerfile` and
//! either `expected.json` (the typed instructions) or `error.txt` (the error as shown).
//! `BERTH_BLESS=1 cargo test -p builder --test golden` rewrites them after a deliberate change.

use std::path::Path;

#[test]
fn golden_parser_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/dockerfile");
    let bless = std::env::var("BERTH_BLESS").is_ok_and(|v| v == "1");
    let mut cases: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 8, "the golden cases are missing from {}", root.display());
    let mut failures = Vec::new();
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        let (file, actual) = match builder::dockerfile::parse("Dockerfile", &text) {
            Ok(df) => ("expected.json", serde_json::to_string_pretty(&df).unwrap() + "\n"),
            Err(e) => ("error.txt", e.to_string() + "\n"),
        };
        let path = case.join(file);
        let other = case.join(if file == "error.txt" { "expected.json" } else { "error.txt" });
        if bless {
            std::fs::write(&path, &actual).unwrap();
            let _ = std::fs::remove_file(&other);
            continue;
        }
        if other.exists() {
            failures.push(format!("{name}: {} is stale: the case now gives {file}", other.display()));
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => {
                failures.push(format!("{name}: {file} differs\n--- expected\n{expected}\n--- actual\n{actual}"))
            }
            Err(_) => failures.push(format!("{name}: no {file}; got\n{actual}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
