//! The Debian package: built with deploy/debian/build-deb (release binary, man pages from the
//! command line, cargo-deb), inspected with dpkg-deb (files, conffiles, dependencies,
//! maintainer scripts), installed on this machine with dpkg, run as installed — `sealpost
//! check` and `sealpost serve` as the sealpost user without systemctl, /healthz, SIGTERM —
//! and purged. Needs root (dpkg) and cargo-deb (tests/run installs it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sealpost_test_support::postfix::free_port;
use sealpost_test_support::{missing, need_program, workspace_root};

const TEST: &str = "debian_package";

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

/// Purges the package when the test ends, also when it fails half-way.
struct Installed {
    dpkg: PathBuf,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let out = run(&self.dpkg, &["--purge", "sealpost"]);
        if !out.status.success() {
            eprintln!(
                "dpkg --purge sealpost: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Kills the service if the test fails before it stopped it.
struct Service(std::process::Child);

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split(' ').nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn user_ids(name: &str) -> (u32, u32) {
    let id = need_program(TEST, "id").expect("id is part of coreutils");
    let uid = ok("id -u", run(&id, &["-u", name]));
    let gid = ok("id -g", run(&id, &["-g", name]));
    (uid.trim().parse().unwrap(), gid.trim().parse().unwrap())
}

fn owner_of(path: &str) -> String {
    let stat = need_program(TEST, "stat").expect("stat is part of coreutils");
    ok("stat", run(&stat, &["-c", "%U:%G %a", path]))
        .trim()
        .to_string()
}

#[test]
fn debian_package_builds_installs_runs_and_purges() {
    if unsafe { libc::geteuid() } != 0 {
        let _: Option<()> = missing(TEST, "installing a package with dpkg needs root");
        return;
    }
    let Some(dpkg) = need_program(TEST, "dpkg") else {
        return;
    };
    let Some(dpkg_deb) = need_program(TEST, "dpkg-deb") else {
        return;
    };
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let has_cargo_deb = Command::new(&cargo)
        .args(["deb", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_cargo_deb {
        let _: Option<()> = missing(
            TEST,
            "cargo-deb is not installed (cargo install cargo-deb --locked)",
        );
        return;
    }

    // Build: the same script an operator runs. It prints the path of the .deb last.
    let root = workspace_root();
    let out = Command::new(root.join("deploy/debian/build-deb"))
        .env("CARGO", &cargo)
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .expect("run deploy/debian/build-deb");
    let stdout = ok("deploy/debian/build-deb", out);
    let deb = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build-deb prints the .deb")
            .trim(),
    );
    assert!(deb.is_file(), "{} is not a file", deb.display());
    let deb_s = deb.to_str().unwrap();

    // Contents.
    let listing = ok("dpkg-deb -c", run(&dpkg_deb, &["-c", deb_s]));
    let entries: Vec<(&str, &str)> = listing
        .lines()
        .map(|l| {
            let mode = l.split_whitespace().next().unwrap_or("");
            let path = l.split_whitespace().nth(5).unwrap_or("");
            (mode, path.trim_start_matches('.'))
        })
        .collect();
    let mode_of = |path: &str| {
        entries
            .iter()
            .find(|(_, p)| *p == path)
            .map(|(m, _)| *m)
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
    };
    assert_eq!(mode_of("/usr/bin/sealpost"), "-rwxr-xr-x");
    for unit in [
        "sealpost.service",
        "sealpost-milter.service",
        "sealpost-jmap.service",
    ] {
        assert_eq!(
            mode_of(&format!("/usr/lib/systemd/system/{unit}")),
            "-rw-r--r--"
        );
    }
    mode_of("/usr/lib/sysusers.d/sealpost.conf");
    assert_eq!(mode_of("/etc/sealpost/sealpost.toml"), "-rw-r-----");
    mode_of("/usr/share/doc/sealpost/copyright");
    mode_of("/usr/share/doc/sealpost/README.md");
    mode_of("/usr/share/doc/sealpost/operator.md");
    mode_of("/usr/share/doc/sealpost/examples/sealpost.toml");
    mode_of("/usr/share/doc/sealpost/dovecot.md");
    mode_of("/usr/share/doc/sealpost/examples/dovecot/90-sealpost-imapsieve.conf");
    mode_of("/usr/share/doc/sealpost/examples/dovecot/sealpost-encrypt.sieve");
    assert_eq!(
        mode_of("/usr/share/doc/sealpost/examples/dovecot/sealpost-encrypt"),
        "-rwxr-xr-x"
    );
    mode_of("/usr/share/man/man1/sealpost.1.gz");
    mode_of("/usr/share/man/man1/sealpost-serve.1.gz");
    mode_of("/usr/share/man/man1/sealpost-keys-import.1.gz");
    assert!(
        !listing.contains("sealpost-man.1"),
        "the hidden man subcommand got a man page:\n{listing}"
    );
    // The packaged configuration is the documented example, byte for byte.
    let packaged = Command::new(&dpkg_deb)
        .args(["--fsys-tarfile", deb_s])
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|child| {
            Command::new("tar")
                .args(["-xOf", "-", "./etc/sealpost/sealpost.toml"])
                .stdin(child.stdout.expect("piped"))
                .output()
        })
        .expect("extract the packaged configuration");
    assert_eq!(
        ok("tar -xO", packaged).as_bytes(),
        std::fs::read(root.join("deploy/sealpost.example.toml")).unwrap()
    );

    // Control data: conffiles, dependencies, maintainer scripts.
    let conffiles = ok(
        "dpkg-deb -I conffiles",
        run(&dpkg_deb, &["-I", deb_s, "conffiles"]),
    );
    assert_eq!(conffiles.trim(), "/etc/sealpost/sealpost.toml");
    let control = ok(
        "dpkg-deb -I control",
        run(&dpkg_deb, &["-I", deb_s, "control"]),
    );
    let depends = control
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends in:\n{control}"));
    for dep in [
        "libc6",
        "libssl3",
        "systemd | systemd-standalone-sysusers",
        "init-system-helpers",
    ] {
        assert!(depends.contains(dep), "Depends lacks {dep}: {depends}");
    }
    assert!(control.contains("Package: sealpost\n"), "{control}");
    assert!(control.contains("Section: mail\n"), "{control}");
    for script in ["postinst", "prerm", "postrm"] {
        let text = ok(script, run(&dpkg_deb, &["-I", deb_s, script]));
        assert_eq!(
            text,
            std::fs::read_to_string(root.join("deploy/debian").join(script)).unwrap()
        );
    }

    // Install. No systemd runs here, so the postinst must not try to start anything.
    let installed = Installed { dpkg: dpkg.clone() };
    ok("dpkg -i", run(&dpkg, &["-i", deb_s]));
    let (uid, gid) = user_ids("sealpost");
    assert_ne!(uid, 0);
    assert_eq!(owner_of("/var/lib/sealpost"), "sealpost:sealpost 750");
    assert_eq!(owner_of("/etc/sealpost"), "root:sealpost 750");
    assert_eq!(owner_of("/etc/sealpost/sealpost.toml"), "root:sealpost 640");
    let status = ok("dpkg -s", run(&dpkg, &["-s", "sealpost"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(Path::new("/usr/share/man/man1/sealpost-serve.1.gz").is_file());

    // The installed binary, as the systemd unit runs it: as sealpost, in /var/lib/sealpost,
    // with the installed configuration. Free ports so parallel tests cannot collide.
    let milter_port = free_port();
    let jmap_port = free_port();
    let metrics_port = free_port();
    let as_service = |args: &[&str]| {
        let mut cmd = Command::new("/usr/bin/sealpost");
        cmd.args(["--config", "/etc/sealpost/sealpost.toml"])
            .args(args)
            .current_dir("/var/lib/sealpost")
            .env_remove("SEALPOST_CONFIG")
            .env_remove("SEALPOST_DATABASE_URL")
            .env_remove("SEALPOST_LOG")
            .env("SEALPOST_MILTER_LISTEN", format!("127.0.0.1:{milter_port}"))
            .env("SEALPOST_JMAP_LISTEN", format!("127.0.0.1:{jmap_port}"))
            .env(
                "SEALPOST_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .stdin(Stdio::null())
            .uid(uid)
            .gid(gid);
        cmd
    };
    let check = ok("sealpost check", as_service(&["check"]).output().unwrap());
    assert!(
        check.contains("config /etc/sealpost/sealpost.toml is valid"),
        "{check}"
    );
    assert!(check.contains("migrations applied"), "{check}");
    assert_eq!(
        owner_of("/var/lib/sealpost/sealpost-data/keystore.db")
            .split(' ')
            .next(),
        Some("sealpost:sealpost")
    );

    let child = as_service(&["serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sealpost serve");
    let mut service = Service(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(r) = http_get(metrics_port, "/healthz") {
            break r;
        }
        if let Ok(Some(status)) = service.0.try_wait() {
            let mut err = String::new();
            service
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .ok();
            panic!("sealpost serve exited with {status}: {err}");
        }
        assert!(Instant::now() < deadline, "no /healthz answer within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(health, (200, "ok\n".to_string()));
    // The milter listens too.
    TcpStream::connect(("127.0.0.1", milter_port)).expect("milter port accepts connections");

    let pid = service.0.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = service.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "sealpost serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    service
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .ok();
    assert!(
        status.success(),
        "sealpost serve after SIGTERM: {status}: {err}"
    );

    // Purge removes the files and the state directory; the conffile goes too.
    drop(installed);
    assert!(!Path::new("/usr/bin/sealpost").exists());
    assert!(!Path::new("/etc/sealpost/sealpost.toml").exists());
    assert!(!Path::new("/var/lib/sealpost").exists());
    let status = run(&dpkg, &["-s", "sealpost"]);
    assert!(
        !status.status.success(),
        "sealpost still known to dpkg after purge"
    );
}
