//! sealpost's milter crate. [`transform`] is the message transform (PGP/MIME or S/MIME encryption with
//! header protection); it does not depend on the milter protocol and also backs
//! `sealpost encrypt`.

pub mod transform;

pub mod config;
pub mod lookup;
pub mod metrics;
pub mod service;

pub use config::{MilterConfig, SmimeConfig};
pub use metrics::Metrics;
