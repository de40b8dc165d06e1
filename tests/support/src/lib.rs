//! Helpers shared by sealpost's end-to-end tests.
//!
//! End-to-end tests need real components (PostgreSQL, gpg, sq, Postfix …). Under
//! `tests/run` the variable `SEALPOST_E2E=require` is set and a missing component fails the
//! test; under plain `cargo test` the test prints why it was skipped and passes.

use std::path::{Path, PathBuf};

/// True when end-to-end components are mandatory (set by tests/run).
pub fn required() -> bool {
    std::env::var("SEALPOST_E2E").is_ok_and(|v| v == "require")
}

/// Call when a component is missing: panics under `SEALPOST_E2E=require`, else reports the
/// skip on stderr. Returns `None` so callers can `let Some(x) = … else { return };`.
pub fn missing<T>(test: &str, why: &str) -> Option<T> {
    if required() {
        panic!("{test}: {why} (SEALPOST_E2E=require: end-to-end components are mandatory)");
    }
    eprintln!("skipped: {test}: {why}; run tests/run to install and require it");
    None
}

/// Path of a program on PATH, if any.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Returns the program's path, or reports it missing (see [`missing`]).
pub fn need_program(test: &str, program: &str) -> Option<PathBuf> {
    which(program).or_else(|| missing(test, &format!("`{program}` is not installed")))
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A committed fixture under tests/fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(rel)
}

/// A fresh, empty PostgreSQL database on the server named by `SEALPOST_TEST_PG_URL`
/// (a URL whose user may create databases; tests/run starts such a server). Returns the
/// URL of the new database.
pub async fn fresh_postgres(test: &str) -> Option<String> {
    let Ok(admin) = std::env::var("SEALPOST_TEST_PG_URL") else {
        return missing(
            test,
            "SEALPOST_TEST_PG_URL is not set (no PostgreSQL server)",
        );
    };
    use sqlx::Connection;
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => return missing(test, &format!("cannot reach PostgreSQL at {admin}: {e}")),
    };
    let name = format!("sealpost_test_{}", random_hex(6));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
    Some(format!("{base}/{name}"))
}

pub mod http;
pub mod postfix;
pub mod secrets;
pub mod smime;

pub use secrets::{capture_logs, register_private_key, register_secret};

pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Runs `script` (Python, typically checking a message with its `email` package) on the file
/// `path` and `args`; the script prints one problem per line, and any problem fails the test.
pub fn assert_python_finds_nothing(script: &str, path: &Path, args: &[&str]) {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let problems = String::from_utf8_lossy(&out.stdout);
    assert!(
        problems.trim().is_empty(),
        "{}: Python's email package finds: {problems}",
        path.display()
    );
}

/// The string field `field` of each object in `items` (a `--json` list the CLI printed);
/// panics when an object lacks it.
pub fn field_strs<'a>(items: &'a [serde_json::Value], field: &str) -> Vec<&'a str> {
    items
        .iter()
        .map(|item| {
            item[field]
                .as_str()
                .unwrap_or_else(|| panic!("no string {field:?} in {item}"))
        })
        .collect()
}

/// Runs `cmd` with nothing on its standard input and returns its output; panics with the
/// command's error output when it fails.
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` with `input` on its standard input (written from another thread, so a large
/// input cannot deadlock against a full output pipe) and collects its output.
pub fn run_with_input(cmd: &mut std::process::Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        // A program may exit without reading everything; its output says why.
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for the child");
    writer.join().expect("stdin writer");
    out
}
