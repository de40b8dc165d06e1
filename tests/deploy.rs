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

/// Every syscall in `group`, with nested groups expanded, from `systemd-analyze
/// syscall-filter` (the table systemd itself applies).
fn syscall_group(
    table: &std::collections::HashMap<String, Vec<String>>,
    group: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for m in table
        .get(group)
        .unwrap_or_else(|| panic!("no group {group}"))
    {
        if m.starts_with('@') {
            out.extend(syscall_group(table, m));
        } else {
            out.push(m.clone());
        }
    }
    out
}

fn syscall_table(analyze: &Path) -> std::collections::HashMap<String, Vec<String>> {
    let (ok, stdout, stderr) = run(analyze, &["syscall-filter".as_ref()]);
    assert!(ok, "systemd-analyze syscall-filter: {stderr}");
    let mut table = std::collections::HashMap::new();
    let mut current: Option<String> = None;
    for line in stdout.lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_string());
            table.insert(line.trim().to_string(), Vec::new());
        } else if line.trim().is_empty() || line.trim_start().starts_with('#') {
            if line.trim().is_empty() {
                current = None;
            }
        } else if let Some(g) = &current {
            table.get_mut(g).unwrap().push(line.trim().to_string());
        }
    }
    table
}

fn http_status(port: u16, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status for {path}: {reply:?}"))
}

/// `sealpost serve` traced with strace while it encrypts a message delivered through a real
/// Postfix, answers the metrics, health and JMAP endpoints and stops on SIGTERM: it makes no
/// system call outside the units' SystemCallFilter= and opens sockets of the allowed
/// families only, so the hardening does not break the service.
#[test]
fn serve_stays_within_the_units_system_call_filter_and_address_families() {
    use sealpost_test_support::postfix::{free_port, Postfix};
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    let Some(analyze) = need_program("deploy_syscalls", "systemd-analyze") else {
        return;
    };
    let Some(strace) = need_program("deploy_syscalls", "strace") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (milter, jmap, metrics) = (free_port(), free_port(), free_port());
    let cfg = dir.path().join("sealpost.toml");
    std::fs::write(
        &cfg,
        format!(
            "[database]\nurl = \"sqlite://{}/ks.db\"\n\n[milter]\nlisten = \"127.0.0.1:{milter}\"\n\n\
             [jmap]\nlisten = \"127.0.0.1:{jmap}\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let key = sealpost_test_support::fixture("keys/gpg-ed25519.asc");
    let out = Command::new(bin())
        .args(["--config", cfg.to_str().unwrap(), "keys", "import"])
        .args(["ed@example.org", key.to_str().unwrap()])
        .env_remove("SEALPOST_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A private Postfix (root only) whose milter is the traced service.
    let Some(pf) = Postfix::start(
        "deploy_syscalls",
        &format!("inet:127.0.0.1:{milter}"),
        &["ed"],
    ) else {
        return;
    };
    // The units run as an unprivileged user; so does the traced service (as root, SQLite
    // would fchown its journal files, which the filter rightly forbids).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(Command::new("chown")
        .args(["-R", "nobody"])
        .arg(dir.path())
        .status()
        .unwrap()
        .success());

    let trace = dir.path().join("trace");
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut tracer = Command::new(&strace)
        .args(["-u", "nobody", "-f", "-qq", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(bin())
        .args(["--config", cfg.to_str().unwrap(), "serve"])
        .env_remove("SEALPOST_DATABASE_URL")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let serve_log = || std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", milter)).is_err() {
        assert!(
            Instant::now() < deadline,
            "serve did not start: {}",
            serve_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let message =
        std::fs::read(workspace_root().join("milter/tests/corpus/plain-ascii.eml")).unwrap();
    let r = pf.send("bob@example.net", &["ed@example.org"], &message);
    assert_eq!(r.accepted(), ["ed@example.org"], "{r:?}");
    let files = pf.wait_for("ed", 1, Duration::from_secs(60));
    assert_eq!(files.len(), 1, "{}", pf.log());
    let delivered = std::fs::read_to_string(&files[0]).unwrap();
    assert!(delivered.contains("multipart/encrypted"), "not encrypted");

    assert_eq!(http_status(metrics, "/metrics"), 200);
    assert_eq!(http_status(metrics, "/healthz"), 200);
    assert_eq!(http_status(metrics, "/readyz"), 200);
    assert_eq!(http_status(jmap, "/.well-known/jmap"), 401);

    // SIGTERM to sealpost (strace's child): it must stop cleanly.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", tracer.id())).unwrap();
    let pid = children
        .split_whitespace()
        .next()
        .expect("sealpost pid")
        .to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = tracer.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "serve exited with {status}: {}",
        serve_log()
    );
    drop(pf);

    let table = syscall_table(&analyze);
    let denied: Vec<String> = ["@privileged", "@resources"]
        .iter()
        .flat_map(|g| syscall_group(&table, g))
        .collect();
    let allowed: std::collections::HashSet<String> = syscall_group(&table, "@system-service")
        .into_iter()
        .filter(|s| !denied.contains(s))
        .collect();
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut used = std::collections::BTreeSet::new();
    let mut families = std::collections::BTreeSet::new();
    for line in text.lines() {
        // "PID name(args…" ; skip signals (---), exits (+++) and resumptions (<...).
        let Some((_, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        if call.starts_with("---") || call.starts_with("+++") || call.starts_with("<...") {
            continue;
        }
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        used.insert(name.to_string());
        if name == "socket" {
            families.insert(args.split(',').next().unwrap_or("").to_string());
        }
    }
    assert!(used.len() > 20, "implausible trace:\n{text}");
    let outside: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    assert!(
        outside.is_empty(),
        "system calls outside SystemCallFilter=@system-service ~@privileged @resources: {outside:?}"
    );
    for f in &families {
        assert!(
            ["AF_UNIX", "AF_INET", "AF_INET6"].contains(&f.as_str()),
            "socket family {f} outside RestrictAddressFamilies"
        );
    }
    assert!(families.contains("AF_INET"), "{families:?}");
    eprintln!(
        "serve used {} distinct system calls, socket families {families:?}",
        used.len()
    );

    // MemoryDenyWriteExecute=: no mapping is both writable and executable.
    let wx: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("PROT_WRITE") && l.contains("PROT_EXEC"))
        .collect();
    assert!(wx.is_empty(), "writable and executable mappings: {wx:?}");
    // ProtectSystem=strict: files are written only in the state directory (here the test's
    // directory) and the private /tmp.
    let state = dir.path().display().to_string();
    let writes: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("open")
                && ["O_WRONLY", "O_RDWR", "O_CREAT"]
                    .iter()
                    .any(|f| l.contains(f))
        })
        .filter(|l| {
            let path = l.split('"').nth(1).unwrap_or("");
            !(path.starts_with(&state) || path.starts_with("/tmp/"))
        })
        .collect();
    assert!(
        writes.is_empty(),
        "files written outside the writable directories: {writes:?}"
    );
}
