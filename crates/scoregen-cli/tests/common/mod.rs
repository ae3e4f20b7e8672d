//! Helpers shared by the CLI integration tests (each test file is its own crate and uses a
//! subset, hence `dead_code`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh directory under the system temp dir, named after the test crate, the process and
/// `name`.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "scoregen-{}-{}-{name}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `scoregen --quiet ARGS`.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scoregen"))
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap()
}

/// Writes `text` to `d/name` and returns the path as a string.
pub fn write(d: &Path, name: &str, text: &str) -> String {
    let p = d.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// Asserts exit code 2, a one-line stderr `error: ...` naming `needle`, no file at `out`
/// and no temporary file left beside it.
pub fn assert_user_error(o: &Output, needle: &str, out: &Path) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "'{err}' should mention '{needle}'"
    );
    assert!(!out.exists(), "{} must not exist", out.display());
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
