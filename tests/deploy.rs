//! The systemd units and the sysusers file in deploy/systemd, checked with systemd's own tools:
//! `systemd-analyze verify` (no warnings at all), `systemd-analyze security` (exposure at most
//! 2.0), `systemd-sysusers` into an empty root; and the operator guide against the metrics the
//! milter registers.

use std::path::{Path, PathBuf};
use std::process::Command;

use sealpost_test_support::{need_program, workspace_root};

const UNITS: [(&str, &str); 3] = [
    ("sealpost.service", "serve"),
    ("sealpost-milter.service", "milter"),
    ("sealpost-jmap.service", "jmap"),
];

/// Highest `systemd-analyze security` exposure a unit may have.
const MAX_EXPOSURE: f64 = 2.0;

/// Directives every unit must set, with their values (the hardening the design asks for).
const HARDENING: [&str; 27] = [
    "User=sealpost",
    "Group=sealpost",
    "StateDirectory=sealpost",
    "ConfigurationDirectory=sealpost",
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateUsers=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "UMask=0077",
    "KillSignal=SIGTERM",
];

fn systemd_dir() -> PathBuf {
    workspace_root().join("deploy/systemd")
}

fn read_unit(name: &str) -> String {
    std::fs::read_to_string(systemd_dir().join(name))
        .unwrap_or_else(|e| panic!("deploy/systemd/{name}: {e}"))
}

/// The unit as installed, but running the binary cargo built (verify checks that ExecStart
/// names an existing executable).
fn unit_for_verification(name: &str, dir: &Path) -> PathBuf {
    let text = read_unit(name).replace("/usr/bin/sealpost ", &format!("{} ", bin()));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sealpost")
}

fn run(program: &Path, args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The number on the "Overall exposure level for UNIT: 1.1 OK" line.
fn overall_exposure(report: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure line in:\n{report}"));
    let (_, rest) = line
        .split_once(": ")
        .unwrap_or_else(|| panic!("unexpected line: {line}"));
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in: {line}"))
}

#[test]
fn units_name_the_right_commands_and_set_the_hardening() {
    for (unit, command) in UNITS {
        let text = read_unit(unit);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let exec: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("ExecStart="))
            .collect();
        assert_eq!(
            exec,
            [&format!(
                "ExecStart=/usr/bin/sealpost {command} --config /etc/sealpost/sealpost.toml"
            )
            .as_str()],
            "{unit}"
        );
        for directive in HARDENING {
            assert!(
                lines.contains(&directive),
                "{unit} lacks the line {directive:?}"
            );
        }
        // The stop timeout leaves room for the milter's default grace period (30 s).
        let stop: u64 = lines
            .iter()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .unwrap_or_else(|| panic!("{unit} has no TimeoutStopSec"))
            .parse()
            .unwrap();
        if command != "jmap" {
            assert!(stop > 30, "{unit}: TimeoutStopSec={stop}");
        }
    }
    // The split units cannot run next to the combined one, and the JMAP unit moves its
    // metrics endpoint off the milter's so both fit on one host with one configuration file.
    for unit in ["sealpost-milter.service", "sealpost-jmap.service"] {
        assert!(
            read_unit(unit).contains("\nConflicts=sealpost.service\n"),
            "{unit}"
        );
    }
    assert!(read_unit("sealpost-jmap.service")
        .contains("\nEnvironment=SEALPOST_METRICS_LISTEN=127.0.0.1:9148\n"));
    // The milter units keep the runtime directory a unix milter socket lives in.
    for unit in ["sealpost.service", "sealpost-milter.service"] {
        assert!(
            read_unit(unit).contains("\nRuntimeDirectory=sealpost\n"),
            "{unit}"
        );
    }
}

#[test]
fn systemd_analyze_verify_accepts_every_unit_without_warnings() {
    let Some(analyze) = need_program("deploy_verify", "systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (unit, _) in UNITS {
        let path = unit_for_verification(unit, dir.path());
        let (ok, stdout, stderr) = run(&analyze, &["verify".as_ref(), path.as_os_str()]);
        assert!(
            ok,
            "systemd-analyze verify {unit} failed:\n{stdout}{stderr}"
        );
        assert!(
            stdout.trim().is_empty() && stderr.trim().is_empty(),
            "systemd-analyze verify {unit} warned:\n{stdout}{stderr}"
        );
    }

    // Control: the same check notices a misspelt directive and a missing binary, so the
    // silence above means something.
    let typo = dir.path().join("typo.service");
    std::fs::write(
        &typo,
        std::fs::read_to_string(dir.path().join("sealpost.service"))
            .unwrap()
            .replace("ProtectClock=yes", "ProtectClok=yes"),
    )
    .unwrap();
    let (_, stdout, stderr) = run(&analyze, &["verify".as_ref(), typo.as_os_str()]);
    assert!(
        format!("{stdout}{stderr}").contains("ProtectClok"),
        "{stdout}{stderr}"
    );
    let missing = dir.path().join("missing.service");
    std::fs::copy(systemd_dir().join("sealpost.service"), &missing).unwrap();
    if !Path::new("/usr/bin/sealpost").exists() {
        let (ok, _, _) = run(&analyze, &["verify".as_ref(), missing.as_os_str()]);
        assert!(!ok, "verify accepted a unit whose binary does not exist");
    }
}

#[test]
fn systemd_analyze_security_rates_every_unit_at_most_2() {
    let Some(analyze) = need_program("deploy_security", "systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (unit, _) in UNITS {
        let path = unit_for_verification(unit, dir.path());
        let (ok, stdout, stderr) = run(
            &analyze,
            &[
                "security".as_ref(),
                "--offline=yes".as_ref(),
                path.as_os_str(),
            ],
        );
        assert!(
            ok,
            "systemd-analyze security {unit} failed:\n{stdout}{stderr}"
        );
        let exposure = overall_exposure(&stdout);
        eprintln!("{unit}: overall exposure {exposure}");
        assert!(
            exposure <= MAX_EXPOSURE,
            "{unit}: exposure {exposure} > {MAX_EXPOSURE}:\n{stdout}"
        );
    }
}

#[test]
fn sysusers_creates_the_sealpost_user() {
    let Some(sysusers) = need_program("deploy_sysusers", "systemd-sysusers") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let conf = systemd_dir().join("sealpost.sysusers.conf");
    let root_arg = format!("--root={}", root.path().display());
    let (ok, stdout, stderr) = run(&sysusers, &[root_arg.as_ref(), conf.as_os_str()]);
    assert!(ok, "systemd-sysusers failed:\n{stdout}{stderr}");
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let user: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("sealpost:"))
        .unwrap_or_else(|| panic!("no sealpost user in:\n{passwd}"))
        .split(':')
        .collect();
    let uid: u32 = user[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "not a system user id: {uid}");
    assert_eq!(user[5], "/var/lib/sealpost");
    assert_eq!(user[6], "/usr/sbin/nologin");
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("sealpost:")), "{group}");
}

#[test]
fn operator_guide_names_every_metric_and_endpoint() {
    let guide = std::fs::read_to_string(workspace_root().join("docs/operator.md")).unwrap();
    let metrics = std::fs::read_to_string(workspace_root().join("milter/src/metrics.rs")).unwrap();
    let mut names = Vec::new();
    let mut rest = metrics.as_str();
    // r.register(\n "name", ...
    while let Some(i) = rest.find(".register(") {
        rest = &rest[i + ".register(".len()..];
        let start = rest.find('"').unwrap() + 1;
        let end = start + rest[start..].find('"').unwrap();
        names.push(rest[start..end].to_string());
    }
    assert!(names.len() >= 5, "metric names not found in metrics.rs");
    for n in names {
        let exposed = format!("sealpost_milter_{n}");
        assert!(guide.contains(&exposed), "docs/operator.md lacks {exposed}");
    }
    for needle in [
        "/metrics",
        "/healthz",
        "/readyz",
        "sealpost-milter.service",
        "sealpost-jmap.service",
        "sealpost.sysusers.conf",
        "SIGTERM",
        "milter_default_action = tempfail",
    ] {
        assert!(guide.contains(needle), "docs/operator.md lacks {needle}");
    }
}
