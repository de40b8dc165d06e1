//! The configuration file: one TOML document whose sections belong to the crates that use
//! them. `SEALPOST_<SECTION>_<KEY>` environment variables override file values.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use sealpost_jmap::{AuthConfig, JmapConfig};
use sealpost_keystore::{DatabaseConfig, LookupConfig, PolicyConfig};
use sealpost_milter::{MilterConfig, SmimeConfig};

/// Top-level sections, in the order of deploy/sealpost.example.toml. Only environment
/// variables naming one of these are treated as overrides.
pub const SECTIONS: &[&str] = &[
    "database", "lookup", "policy", "smime", "milter", "jmap", "auth", "metrics", "log",
];

/// Sub-tables an environment override can reach: `SEALPOST_AUTH_IMAP_SERVER` sets
/// `[auth.imap] server`.
const NESTED: &[(&str, &str)] = &[
    ("jmap", "limits"),
    ("jmap", "keys"),
    ("jmap", "wkd"),
    ("auth", "rate_limit"),
    ("auth", "imap"),
    ("auth", "oidc"),
    ("auth", "proxy"),
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub lookup: LookupConfig,
    pub policy: PolicyConfig,
    pub smime: SmimeConfig,
    pub milter: MilterConfig,
    pub jmap: JmapConfig,
    pub auth: AuthConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

/// `[metrics]`: Prometheus metrics and health checks over HTTP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `HOST:PORT` for /metrics, /healthz and /readyz; empty disables the endpoint.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9147".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter, e.g. "info" or "sealpost=debug,info".
    pub level: String,
    /// "text" or "json".
    pub format: LogFormat,
    /// Also append every log line to this file ("" = stderr only); `%p` becomes the
    /// process id.
    pub file: String,
    /// Filter for the file copy; "" = the same as stderr's.
    pub file_level: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
            file: String::new(),
            file_level: String::new(),
        }
    }
}

/// Where the configuration came from, for messages.
pub struct Loaded {
    pub config: Config,
    pub path: Option<PathBuf>,
}

/// Reads the file (if any), applies environment overrides and checks every key.
pub fn load(path: Option<&Path>) -> Result<Loaded> {
    let mut table = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config file {}", p.display()))?;
            text.parse::<toml::Table>().map_err(|e| {
                anyhow::anyhow!(
                    "config file {} is not valid TOML: {}",
                    p.display(),
                    one_line(&e.to_string())
                )
            })?
        }
        None => toml::Table::new(),
    };
    apply_env(&mut table, std::env::vars())?;
    let mut config: Config =
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                anyhow::anyhow!(
                    "invalid configuration{}: {}",
                    path.map(|p| format!(" in {}", p.display()))
                        .unwrap_or_default(),
                    one_line(e.message())
                )
            })?;
    // [smime] settings live with the parts that use them.
    config.milter.smime = config.smime.cms_options();
    config.policy.smime_ca_file = config.smime.ca_file();
    validate(&config)?;
    Ok(Loaded {
        config,
        path: path.map(Path::to_path_buf),
    })
}

fn validate(c: &Config) -> Result<()> {
    if c.policy.min_rsa_bits < 2048 {
        bail!(
            "invalid configuration: policy.min_rsa_bits = {} is below 2048, which the OpenPGP standard policy refuses anyway",
            c.policy.min_rsa_bits
        );
    }
    if c.database.url.trim().is_empty() {
        bail!("invalid configuration: database.url is empty");
    }
    let m = &c.milter;
    for (key, value) in [
        ("max_recipients", m.max_recipients),
        ("max_header_fields", m.max_header_fields),
    ] {
        if value == 0 {
            bail!("invalid configuration: milter.{key} must be at least 1");
        }
    }
    let most = sealpost_milter::transform::MAX_HEADER_BYTES;
    if !(1024..=most).contains(&m.max_header_bytes) {
        bail!(
            "invalid configuration: milter.max_header_bytes = {} must be between 1024 and {most}",
            m.max_header_bytes
        );
    }
    c.jmap
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    c.auth
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    Ok(())
}

/// `SEALPOST_DATABASE_URL=…` sets `[database] url`. The value is read as a TOML value when
/// it parses as one (`true`, `5`, `[1, 2]`), else as a string.
fn apply_env(table: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) -> Result<()> {
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("SEALPOST_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        if !SECTIONS.contains(&section) || key.is_empty() {
            continue;
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value.clone()));
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(mut sec) = entry.as_table_mut() else {
            bail!("config section [{section}] is not a table, so {name} cannot override it");
        };
        let mut key = key;
        if let Some((_, sub)) = NESTED.iter().find(|(s, sub)| {
            *s == section && key.len() > sub.len() + 1 && key.starts_with(&format!("{sub}_"))
        }) {
            key = &key[sub.len() + 1..];
            sec = match sec
                .entry(sub.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
            {
                Some(t) => t,
                None => bail!(
                    "config section [{section}.{sub}] is not a table, so {name} cannot override it"
                ),
            };
        }
        sec.insert(key.to_string(), parsed);
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_known_sections_only() {
        let mut t = toml::Table::new();
        apply_env(
            &mut t,
            [
                (
                    "SEALPOST_DATABASE_URL".to_string(),
                    "postgres://x/y".to_string(),
                ),
                (
                    "SEALPOST_POLICY_REQUIRE_UID_MATCH".to_string(),
                    "false".to_string(),
                ),
                ("SEALPOST_E2E".to_string(), "require".to_string()),
                ("HOME".to_string(), "/root".to_string()),
            ]
            .into_iter(),
        )
        .unwrap();
        let c: Config = toml::Value::Table(t).try_into().unwrap();
        assert_eq!(c.database.url, "postgres://x/y");
        assert!(!c.policy.require_uid_match);
    }

    #[test]
    fn env_overrides_reach_sub_tables() {
        let mut t = toml::Table::new();
        apply_env(
            &mut t,
            [
                ("SEALPOST_AUTH_MODE".to_string(), "imap".to_string()),
                (
                    "SEALPOST_AUTH_IMAP_SERVER".to_string(),
                    "127.0.0.1:1143".to_string(),
                ),
                (
                    "SEALPOST_JMAP_LIMITS_MAX_CALLS_IN_REQUEST".to_string(),
                    "4".to_string(),
                ),
                (
                    "SEALPOST_JMAP_CORS_ORIGINS".to_string(),
                    "[\"https://webmail.example.org\"]".to_string(),
                ),
            ]
            .into_iter(),
        )
        .unwrap();
        let c: Config = toml::Value::Table(t).try_into().unwrap();
        assert_eq!(c.auth.mode, sealpost_jmap::AuthMode::Imap);
        assert_eq!(c.auth.imap.server, "127.0.0.1:1143");
        assert_eq!(c.jmap.limits.max_calls_in_request, 4);
        assert_eq!(c.jmap.cors_origins, vec!["https://webmail.example.org"]);
    }

    /// Every key of every section appears in the example, set or commented out.
    #[test]
    fn example_config_documents_every_key() {
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/sealpost.example.toml"
        ))
        .unwrap();
        let sections: Vec<(&str, toml::Value)> = vec![
            (
                "database",
                toml::Value::try_from(DatabaseConfig::default()).unwrap(),
            ),
            (
                "lookup",
                toml::Value::try_from(LookupConfig::default()).unwrap(),
            ),
            (
                "policy",
                toml::Value::try_from(PolicyConfig::default()).unwrap(),
            ),
            (
                "milter",
                toml::Value::try_from(MilterConfig::default()).unwrap(),
            ),
            (
                "jmap",
                toml::Value::try_from(JmapConfig::default()).unwrap(),
            ),
            (
                "auth",
                toml::Value::try_from(AuthConfig::default()).unwrap(),
            ),
        ];
        // Sub-tables ([jmap.limits], [auth.imap], ...) are sections of their own.
        let sections: Vec<(String, toml::Value)> = sections
            .into_iter()
            .flat_map(|(s, v)| {
                let mut out = vec![];
                let mut top = toml::Table::new();
                for (k, val) in v.as_table().unwrap() {
                    match val {
                        toml::Value::Table(_) => out.push((format!("{s}.{k}"), val.clone())),
                        _ => {
                            top.insert(k.clone(), val.clone());
                        }
                    }
                }
                out.insert(0, (s.to_string(), toml::Value::Table(top)));
                out
            })
            .collect();
        let mut keys: Vec<(String, String)> = sections
            .into_iter()
            .flat_map(|(s, v)| {
                v.as_table()
                    .unwrap()
                    .keys()
                    .map(|k| (s.clone(), k.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        // Optional keys have no default value to serialize.
        keys.push(("milter".into(), "spill_dir".into()));
        keys.extend(
            [
                ("metrics", "listen"),
                ("log", "level"),
                ("log", "format"),
                ("log", "file"),
                ("log", "file_level"),
            ]
            .map(|(a, b)| (a.into(), b.into())),
        );
        for (section, key) in keys {
            let body = example
                .split(&format!("[{section}]"))
                .nth(1)
                .unwrap_or_else(|| panic!("no [{section}] in the example"));
            let body = body.split("\n[").next().unwrap();
            assert!(
                body.lines().any(|l| {
                    let l = l.trim_start_matches('#').trim_start();
                    l.starts_with(&format!("{key} ="))
                }),
                "[{section}] {key} is not documented in deploy/sealpost.example.toml"
            );
        }
    }

    /// docs/config.md names every section of the example, so the overview cannot drift.
    #[test]
    fn config_doc_names_every_section() {
        let root = env!("CARGO_MANIFEST_DIR");
        let example =
            std::fs::read_to_string(format!("{root}/deploy/sealpost.example.toml")).unwrap();
        let doc = std::fs::read_to_string(format!("{root}/docs/config.md")).unwrap();
        for line in example.lines().filter(|l| l.starts_with('[')) {
            let section = line.trim();
            assert!(
                doc.contains(&format!("`{section}`")),
                "docs/config.md does not describe {section}"
            );
        }
    }

    #[test]
    fn example_config_is_complete_and_valid() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/sealpost.example.toml");
        let text = std::fs::read_to_string(example).unwrap();
        let table: toml::Table = text.parse().unwrap();
        let _: Config = toml::Value::Table(table.clone()).try_into().unwrap();
        for s in SECTIONS {
            assert!(table.contains_key(*s), "example config lacks [{s}]");
        }
    }
}
