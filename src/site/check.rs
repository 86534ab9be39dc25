//! The check a site document passes before anything is done with it: on the node before it
//! is proposed (`config apply`, `--dry-run`), and offline (`fepha config check`). One code
//! path, so that both say the same about the same file.

use std::fmt;

use super::{Protocol, Site, validate::Issue};

/// The site configuration is one document; anything bigger than this is a mistake.
///
/// 32 MiB: a site of 500 RTUs × 200 points, every point with a description of 30-40
/// characters and mapped by a 104 forwarder, written in ordinary tables (the benchmark's
/// generated site), is 19.4 MiB; the limit leaves over half as much again (about 160 000 such
/// points). Everything downstream follows from it: the admin API's request limit
/// (`admin::MAX_REQUEST_BYTES`), the Raft and peer message limit (`raft::MAX_MESSAGE_BYTES`,
/// twice this as the worst JSON of the log entry), and the AppendEntries timeout, which grows
/// with the request's size (`raft/network.rs`).
pub(crate) const MAX_CONFIG_BYTES: usize = 32 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejected {
    #[error("the configuration is {0} bytes; the limit is {MAX_CONFIG_BYTES} bytes")]
    TooBig(usize),
    #[error(
        "the site configuration has {} problem(s); nothing was applied:\n{}",
        .0.len(),
        listing(.0)
    )]
    Invalid(Vec<Issue>),
}

fn listing(issues: &[Issue]) -> String {
    let lines: Vec<String> = issues.iter().map(|i| format!("  {i}")).collect();
    lines.join("\n")
}

/// Parses and checks the whole of `text`; every problem is listed.
pub(crate) fn check(text: &str) -> Result<Site, Rejected> {
    check_size(text)?;
    super::parse(text).map_err(Rejected::Invalid)
}

/// The size alone, which a client can check before it sends the file.
pub(crate) fn check_size(text: &str) -> Result<(), Rejected> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(Rejected::TooBig(text.len()));
    }
    Ok(())
}

/// What a valid document holds, in counts, for a line of output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub rtus: usize,
    pub modbus_rtus: usize,
    pub iec104_rtus: usize,
    pub channels: usize,
    pub endpoints: usize,
    pub points: usize,
    pub forwarders: usize,
    pub ioa_mappings: usize,
}

impl Counts {
    pub(crate) fn of(site: &Site) -> Counts {
        let channels = site.rtus.iter().flat_map(|r| &r.channels);
        Counts {
            rtus: site.rtus.len(),
            modbus_rtus: site
                .rtus
                .iter()
                .filter(|r| r.protocol == Protocol::Modbus)
                .count(),
            iec104_rtus: site
                .rtus
                .iter()
                .filter(|r| r.protocol == Protocol::Iec104)
                .count(),
            channels: channels.clone().count(),
            endpoints: channels.map(|c| c.endpoints.len()).sum(),
            points: site.points.len(),
            forwarders: site.forwarders.len(),
            ioa_mappings: site.forwarders.iter().map(|f| f.maps.len()).sum(),
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} RTU(s) ({} Modbus, {} IEC 104) on {} channel(s) with {} endpoint(s), {} point(s), \
             {} forwarder(s) mapping {} IOA(s)",
            self.rtus,
            self.modbus_rtus,
            self.iec104_rtus,
            self.channels,
            self.endpoints,
            self.points,
            self.forwarders,
            self.ioa_mappings
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_document_is_counted() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/site.toml"))
                .expect("examples/site.toml");
        let site = check(&text).expect("examples/site.toml is valid");
        let counts = Counts::of(&site);
        assert_eq!(counts.rtus, counts.modbus_rtus + counts.iec104_rtus);
        assert!(
            counts.rtus > 0 && counts.points > 0 && counts.forwarders > 0,
            "{counts}"
        );
        assert!(counts.endpoints >= counts.channels, "{counts}");
    }

    #[test]
    fn every_problem_is_listed_under_one_heading() {
        let err =
            check("[site]\nname = \"x\"\n[[rtu]]\nid = \"a\"\nprotocol = \"modbus\"\ncolour = 1\n")
                .expect_err("an unknown key");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "the site configuration has 1 problem(s); nothing was applied:\n  line "
            ),
            "{text}"
        );
        assert!(text.contains("colour"), "{text}");
        let big = "#".repeat(MAX_CONFIG_BYTES + 1);
        assert_eq!(check(&big), Err(Rejected::TooBig(MAX_CONFIG_BYTES + 1)));
    }
}
