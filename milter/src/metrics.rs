//! Prometheus metrics of the milter. Labels carry outcomes and reasons only: never
//! addresses, subjects or key material.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

pub struct Metrics {
    messages: Family<OutcomeLabel, Counter>,
    recipients: Family<OutcomeLabel, Counter>,
    bytes_in: Counter,
    bytes_out: Counter,
    transform_seconds: Histogram,
    cache_hits: Counter,
    cache_misses: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them under `sealpost_milter_*`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            messages: Family::default(),
            recipients: Family::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            // 1 ms .. ~65 s
            transform_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("sealpost_milter");
        r.register(
            "messages",
            "Messages by outcome (encrypted, skipped, plaintext, tempfailed, rejected)",
            m.messages.clone(),
        );
        r.register(
            "recipients",
            "Recipients by decision at RCPT (encrypt, plaintext, split, tempfailed)",
            m.recipients.clone(),
        );
        r.register("body_bytes_in", "Body bytes received", m.bytes_in.clone());
        r.register(
            "body_bytes_out",
            "Body bytes written after encryption",
            m.bytes_out.clone(),
        );
        r.register(
            "transform_seconds",
            "Time from end of headers to the encrypted body being ready",
            m.transform_seconds.clone(),
        );
        r.register(
            "cache_hits",
            "Recipient lookups answered from the cache",
            m.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Recipient lookups that went to the keystore",
            m.cache_misses.clone(),
        );
        m
    }

    pub fn message(&self, outcome: &str) {
        self.messages
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn recipient(&self, outcome: &str) {
        self.recipients
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn bytes(&self, inbound: u64, outbound: u64) {
        self.bytes_in.inc_by(inbound);
        self.bytes_out.inc_by(outbound);
    }

    pub fn transform_time(&self, seconds: f64) {
        self.transform_seconds.observe(seconds);
    }

    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }
}
