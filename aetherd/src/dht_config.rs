//! The `[dht]` section of the node's config file: how the storage plane replicates.
//!
//! ```toml
//! [dht]
//! replication = 3      # replicas per partition (capped by the number of members)
//! write_quorum = 2     # acknowledgements a write needs, this node's own included
//! read_quorum = 2      # replies a read needs
//! ```
//!
//! Every node of a cluster should have the same section. Invariant: `1 <= read_quorum, write_quorum <=
//! replication <= PEERS_MAX`, else the node does not start, and the error names the file, line and field.

use serde::Deserialize;
use toml::Spanned;

/// The raw section as the file has it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDht {
    replication: Option<Spanned<u64>>,
    write_quorum: Option<Spanned<u64>>,
    read_quorum: Option<Spanned<u64>>,
}

/// Validates the section into the replica's configuration (the defaults for what it leaves out).
pub fn parse(raw: &RawDht, at: &dyn Fn(std::ops::Range<usize>, &str, String) -> String) -> Result<dht::Config, String> {
    let mut config = dht::Config::default();
    let max = crate::config::PEERS_MAX as u64;
    let number = |value: &Option<Spanned<u64>>, field: &str, low: u64, high: u64, default: usize| match value {
        None => Ok(default),
        Some(v) if (low..=high).contains(v.get_ref()) => Ok(*v.get_ref() as usize),
        Some(v) => Err(at(v.span(), field, format!("{} is not from {low} to {high}", v.get_ref()))),
    };
    config.replication = number(&raw.replication, "dht.replication", 1, max, config.replication)?;
    let replication = config.replication as u64;
    config.write_quorum = number(&raw.write_quorum, "dht.write_quorum", 1, replication, config.write_quorum)?;
    config.read_quorum = number(&raw.read_quorum, "dht.read_quorum", 1, replication, config.read_quorum)?;
    if config.write_quorum > config.replication || config.read_quorum > config.replication {
        let span = raw.replication.as_ref().map_or(0..0, Spanned::span);
        let message = format!(
            "{} replicas cannot give a write quorum of {} and a read quorum of {}",
            config.replication, config.write_quorum, config.read_quorum
        );
        return Err(at(span, "dht.replication", message));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<dht::Config, String> {
        #[derive(Deserialize)]
        struct Wrapper {
            #[serde(default)]
            dht: RawDht,
        }
        let raw: Wrapper = toml::from_str(text).map_err(|e| e.to_string())?;
        parse(&raw.dht, &|span, field, msg| format!("at {}: {field}: {msg}", span.start))
    }

    #[test]
    fn defaults_settings_and_refusals() {
        let default = parse_text("").unwrap();
        assert_eq!((default.replication, default.write_quorum, default.read_quorum), (3, 2, 2));
        let set = parse_text("[dht]\nreplication = 5\nwrite_quorum = 3\nread_quorum = 3\n").unwrap();
        assert_eq!((set.replication, set.write_quorum, set.read_quorum), (5, 3, 3));
        let over = parse_text("[dht]\nreplication = 3\nwrite_quorum = 4\n").unwrap_err();
        assert!(over.contains("dht.write_quorum"), "{over}");
        let small = parse_text("[dht]\nreplication = 1\n").unwrap_err();
        assert!(small.contains("dht.replication"), "{small}");
        assert!(parse_text("[dht]\nreplication = 0\n").unwrap_err().contains("dht.replication"));
        assert!(parse_text("[dht]\nreplicas = 3\n").is_err(), "unknown field");
    }
}
