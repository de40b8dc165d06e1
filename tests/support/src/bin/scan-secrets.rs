//! `scan-secrets [--allow-empty] LOG_DIR`: fails (exit 1) when a test secret appears in any
//! file under LOG_DIR, naming the file, the line and which marker matched (never the whole
//! secret); also fails when LOG_DIR holds no log line at all, since then log capture is
//! broken, unless `--allow-empty` is given.
//! The markers are described in `sealpost_test_support::secrets`.

use std::path::PathBuf;
use std::process::ExitCode;

use sealpost_test_support::secrets;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // For a run of a few chosen tests, which may start no sealpost process at all.
    let allow_empty = args.first().is_some_and(|a| a == "--allow-empty");
    if allow_empty {
        args.remove(0);
    }
    let [dir] = args.as_slice() else {
        eprintln!("usage: scan-secrets [--allow-empty] LOG_DIR");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    let markers = match secrets::all_markers(&sealpost_test_support::workspace_root()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("scan-secrets: cannot collect the markers: {e}");
            return ExitCode::from(2);
        }
    };
    let scan = match secrets::scan(&dir, &markers) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("scan-secrets: cannot read {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    if (scan.files == 0 || scan.lines == 0) && !allow_empty {
        eprintln!(
            "scan-secrets: FAILED: no log lines under {} ({} files): log capture is broken",
            dir.display(),
            scan.files
        );
        return ExitCode::from(1);
    }
    let summary = format!(
        "{} files, {} lines, {} markers",
        scan.files,
        scan.lines,
        markers.len()
    );
    if scan.hits.is_empty() {
        println!("scan-secrets: {summary}: no secret in the logs");
        return ExitCode::SUCCESS;
    }
    const SHOWN: usize = 50;
    for hit in scan.hits.iter().take(SHOWN) {
        let m = &markers[hit.marker];
        eprintln!(
            "{}:{}: {} ({}…)",
            hit.file.display(),
            hit.line,
            m.name,
            m.prefix()
        );
    }
    if scan.hits.len() > SHOWN {
        eprintln!("… and {} more", scan.hits.len() - SHOWN);
    }
    eprintln!(
        "scan-secrets: FAILED: {} secrets in the logs ({summary})",
        scan.hits.len()
    );
    ExitCode::from(1)
}
