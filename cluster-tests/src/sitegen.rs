//! A generated site document of any size, for the benchmark's big sites: `devices` Modbus
//! devices, each serving `units` unit ids, one RTU per unit id, `points` u16 measured points
//! per RTU on holding registers 0.., every point with a description of 30-40 characters as
//! real sites have, and optionally a 104 forwarder mapping every point (IOAs 1.. in order).
//!
//! Written in ordinary TOML tables (`[[rtu]]`, `[[rtu.channel]]`, `[[point]]`,
//! `[[forwarder.map]]`), as an engineer's tool would write it: the size is that of a real
//! site, not of a document squeezed to fit a limit.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// What to generate.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    pub name: String,
    /// One Modbus device per address; each serves unit ids `1..=units`.
    pub devices: Vec<SocketAddr>,
    pub units: u8,
    pub points: u16,
    pub poll_interval_ms: u64,
    /// Descriptions on every point (as real sites have); without, the document is about 30 %
    /// smaller, which lets a binary with the old 1 MiB limit take 10 000 points (for a figure
    /// before and after).
    pub descriptions: bool,
    /// A 104 forwarder mapping every point, to IOAs 1..=N in RTU and address order.
    pub forwarder: Option<ForwarderSpec>,
}

#[derive(Debug, Clone, Copy)]
pub struct ForwarderSpec {
    pub port: u16,
    pub common_address: u16,
    /// The link's windows k and w, when not the defaults.
    pub window: Option<(u16, u16)>,
}

impl SiteSpec {
    /// The RTUs, `devices.len() * units`.
    pub fn rtus(&self) -> usize {
        self.devices.len() * usize::from(self.units)
    }

    /// The points, `rtus() * points`.
    pub fn point_count(&self) -> usize {
        self.rtus() * usize::from(self.points)
    }
}

/// The id of the RTU of device `d`'s unit id `u`.
pub fn rtu_id(d: usize, u: u8) -> String {
    format!("r{d}u{u}")
}

/// The id of point `a` (its holding register) of RTU `rtu`.
pub fn point_id(rtu: &str, a: u16) -> String {
    format!("{rtu}.{a}")
}

/// Words for the descriptions, so that they read like a real point list and differ.
const BAYS: [&str; 8] = [
    "Feeder",
    "Incomer",
    "Bus coupler",
    "Transformer",
    "Capacitor",
    "Line",
    "Generator",
    "Station supply",
];
const QUANTITIES: [&str; 10] = [
    "current L1",
    "current L2",
    "current L3",
    "voltage L1-L2",
    "voltage L2-L3",
    "active power",
    "reactive power",
    "frequency",
    "oil temperature",
    "tap position",
];

/// A description of 30-40 characters for point `a` of RTU number `r`.
fn description(r: usize, a: u16) -> String {
    let bay = BAYS[usize::from(a / 10) % BAYS.len()];
    let quantity = QUANTITIES[usize::from(a) % QUANTITIES.len()];
    let mut d = format!("S{:03} {bay} {:02} {quantity}", r % 1000, a / 10);
    // Pad the short ones to 30 characters; none is over 40.
    while d.len() < 30 {
        d.push('.');
    }
    d
}

/// The site document of `spec`.
pub fn site(spec: &SiteSpec) -> String {
    let mut s = String::with_capacity(spec.point_count() * 200 + 4096);
    let _ = write!(s, "[site]\nname = \"{}\"\n", spec.name);
    for (d, addr) in spec.devices.iter().enumerate() {
        for u in 1..=spec.units {
            let _ = write!(
                s,
                "\n[[rtu]]\nid = \"{}\"\nprotocol = \"modbus\"\nunit_id = {u}\n\
                 poll_interval_ms = {}\ntimeout_ms = 1000\nstandby = \"probe\"\n\
                 [[rtu.channel]]\nname = \"lan\"\nendpoints = [\"{addr}\"]\n",
                rtu_id(d, u),
                spec.poll_interval_ms,
            );
        }
    }
    let mut r = 0;
    for d in 0..spec.devices.len() {
        for u in 1..=spec.units {
            let rtu = rtu_id(d, u);
            for a in 0..spec.points {
                let _ = write!(
                    s,
                    "[[point]]\nid = \"{}\"\nrtu = \"{rtu}\"\nkind = \"measured\"\n\
                     table = \"holding\"\naddress = {a}\nformat = \"u16\"\n",
                    point_id(&rtu, a),
                );
                if spec.descriptions {
                    let _ = writeln!(s, "description = \"{}\"", description(r, a));
                }
            }
            r += 1;
        }
    }
    if let Some(f) = spec.forwarder {
        let _ = write!(
            s,
            "\n[[forwarder]]\nname = \"cc\"\nport = {}\ncommon_address = {}\n",
            f.port, f.common_address
        );
        if let Some((k, w)) = f.window {
            let _ = write!(s, "k = {k}\nw = {w}\n");
        }
        let mut ioa = 0u32;
        for d in 0..spec.devices.len() {
            for u in 1..=spec.units {
                let rtu = rtu_id(d, u);
                for a in 0..spec.points {
                    ioa += 1;
                    let _ = write!(
                        s,
                        "[[forwarder.map]]\npoint = \"{}\"\nioa = {ioa}\n",
                        point_id(&rtu, a)
                    );
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_30_to_40_characters() {
        for r in [0, 7, 499] {
            for a in 0..200 {
                let d = description(r, a);
                assert!((30..=40).contains(&d.len()), "{d:?}");
            }
        }
    }

    #[test]
    fn the_site_is_ordinary_toml_with_every_point() {
        let spec = SiteSpec {
            name: "t".into(),
            devices: vec!["127.0.0.1:5020".parse().expect("an address")],
            units: 3,
            points: 4,
            poll_interval_ms: 100,
            descriptions: true,
            forwarder: Some(ForwarderSpec {
                port: 2404,
                common_address: 1,
                window: None,
            }),
        };
        let text = site(&spec);
        let doc: toml::Table = text.parse().expect("valid TOML");
        let len = |v: &toml::Value| v.as_array().map_or(0, Vec::len);
        assert_eq!(len(&doc["rtu"]), 3);
        assert_eq!(len(&doc["point"]), 12);
        assert_eq!(len(&doc["forwarder"][0]["map"]), spec.point_count());
        assert!(!text.contains('{'), "no inline tables");
    }
}
