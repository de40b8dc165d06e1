//! Renders a logged JMAP exchange as the example section of docs/jmap.md, with random
//! values (account ids, fingerprints, dates, armored blocks) replaced by stable
//! placeholders, and checks that the documentation shows exactly that.

use std::collections::HashMap;

use serde_json::Value;

pub struct Normalizer {
    names: HashMap<String, String>,
    fprs: usize,
}

impl Normalizer {
    pub fn new(fixed: &[(&str, &str)]) -> Normalizer {
        Normalizer {
            names: fixed
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            fprs: 0,
        }
    }

    fn string(&mut self, s: &str) -> String {
        if let Some(rest) = s.strip_prefix("-----BEGIN PGP ") {
            let kind = rest.split("-----").next().unwrap_or("");
            return format!("-----BEGIN PGP {kind}-----\n\n…\n-----END PGP {kind}-----\n");
        }
        let is_date = s.len() == 20
            && s.as_bytes()[4] == b'-'
            && s.as_bytes()[10] == b'T'
            && s.ends_with('Z');
        if is_date {
            return "2026-01-01T00:00:00Z".into();
        }
        // Fingerprints (40 hex digits) and key ids (16), wherever they occur.
        let mut out = s.to_string();
        let bytes = s.as_bytes();
        let is_hex = |b: &u8| b.is_ascii_digit() || (b'A'..=b'F').contains(b);
        let mut i = 0;
        while i < bytes.len() {
            if !is_hex(&bytes[i]) || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < bytes.len() && is_hex(&bytes[j]) {
                j += 1;
            }
            let ends_word = j == bytes.len() || !bytes[j].is_ascii_alphanumeric();
            if ends_word && (j - i == 40 || j - i == 16) {
                let w = &s[i..j];
                if !self.names.contains_key(w) {
                    self.fprs += 1;
                    let name = format!("{:0>width$}", format!("F{}", self.fprs), width = j - i);
                    self.names.insert(w.to_string(), name);
                }
            }
            i = j.max(i + 1);
        }
        // Longest first, so a key id never replaces part of a fingerprint.
        let mut names: Vec<(&String, &String)> = self.names.iter().collect();
        names.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
        for (k, v) in names {
            out = out.replace(k.as_str(), v.as_str());
        }
        out
    }

    pub fn value(&mut self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.string(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.value(x)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| {
                        let k2 = self.string(k);
                        let x2 = match (k.as_str(), x) {
                            ("size", Value::Number(_)) => Value::from(0),
                            ("sessionState" | "state", Value::String(s)) if s.len() == 16 => {
                                Value::String("75128aab4b1f6bbb".into())
                            }
                            _ => self.value(x),
                        };
                        (k2, x2)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

pub const BEGIN: &str =
    "<!-- BEGIN GENERATED CLIENT FLOW: do not edit; see jmap-ext/tests/flow.rs -->";
pub const END: &str = "<!-- END GENERATED CLIENT FLOW -->";

/// Markdown for the exchanges: (title, request, response status, response body).
pub fn render(entries: &[(String, Value, u16, Value)]) -> String {
    let mut md = String::new();
    for (i, (title, req, status, resp)) in entries.iter().enumerate() {
        md.push_str(&format!("\n#### {}. {title}\n\n", i + 1));
        match req {
            Value::String(line) => md.push_str(&format!("```http\n{line}\n```\n\n")),
            _ => md.push_str(&format!(
                "```http\nPOST /jmap HTTP/1.1\nAuthorization: Basic …\nContent-Type: application/json\n\n{}\n```\n\n",
                serde_json::to_string_pretty(req).unwrap()
            )),
        }
        md.push_str(&format!(
            "```http\nHTTP/1.1 {status}\nContent-Type: application/json\n\n{}\n```\n",
            serde_json::to_string_pretty(resp).unwrap()
        ));
    }
    md
}

/// Compares the generated section with docs/jmap.md; with SEALPOST_UPDATE_DOCS=1 the
/// file is rewritten instead.
pub fn check_docs(section: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/jmap.md");
    let doc = std::fs::read_to_string(&path).expect("docs/jmap.md");
    let (Some(a), Some(b)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("docs/jmap.md lacks the generated-section markers");
    };
    let current = &doc[a + BEGIN.len()..b];
    let wanted = format!("\n{section}\n");
    if current == wanted {
        return;
    }
    if std::env::var("SEALPOST_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        let new = format!("{}{BEGIN}{wanted}{}", &doc[..a], &doc[b..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    panic!(
        "docs/jmap.md shows an outdated client flow; regenerate it with \
         SEALPOST_UPDATE_DOCS=1 cargo test -p sealpost-jmap --test flow"
    );
}
