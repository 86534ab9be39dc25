//! Parsing and checking a site configuration. Every problem is reported, each with its key
//! path and line, so that an engineer fixes the file in one go rather than one error a run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use toml::Spanned;

use super::{
    Format, Iec104Rtu, Point, PointKind, Protocol, Rtu, Site, Standby, Table, kind_of, untimed,
};
use crate::iec104::{ParamError, TypeId};

/// The largest information object address: three octets.
const MAX_IOA: u32 = 0xFF_FFFF;
/// Ten times the default; a batch of that many changes is about a megabyte of log entry.
const MAX_BATCH_CHANGES: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    /// Where in the file, as a key path: `rtu[2].channel[0].endpoints[1]`.
    pub path: String,
    /// 1-based; None for something that is missing rather than wrong.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Parses and checks `text`; on failure, every problem found.
pub(crate) fn parse(text: &str) -> Result<Site, Vec<Issue>> {
    let site: Site = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        vec![Issue {
            path: "(file)".into(),
            line,
            message: e.message().trim().to_string(),
        }]
    })?;
    let mut check = Checker {
        newlines: text.match_indices('\n').map(|(i, _)| i).collect(),
        issues: Vec::new(),
    };
    check.site(&site);
    if check.issues.is_empty() {
        Ok(site)
    } else {
        Err(check.issues)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

struct Checker {
    /// Where the file's lines end, so that a line number costs a binary search: a site with
    /// 10 000 points must not take seconds to check.
    newlines: Vec<usize>,
    issues: Vec<Issue>,
}

impl Checker {
    fn line(&self, offset: usize) -> usize {
        self.newlines.partition_point(|n| *n < offset) + 1
    }

    fn issue(&mut self, path: String, span: Range<usize>, message: String) {
        // A default value has no place in the file.
        let line = (span.end > 0).then(|| self.line(span.start));
        self.issues.push(Issue {
            path,
            line,
            message,
        });
    }

    fn site(&mut self, site: &Site) {
        if site.site.name.get_ref().trim().is_empty() {
            self.issue(
                "site.name".into(),
                site.site.name.span(),
                "must not be empty".into(),
            );
        }
        self.timers(site);
        let rtus = self.rtus(site);
        let points = self.points(site, &rtus);
        self.forwarders(site, &points);
    }

    fn timers(&mut self, site: &Site) {
        let t = &site.timers;
        let ttl = *t.session_ttl_ms.get_ref();
        if !(100..=60_000).contains(&ttl) {
            self.issue(
                "timers.session_ttl_ms".into(),
                t.session_ttl_ms.span(),
                format!("{ttl} is outside 100..=60000"),
            );
        }
        if *t.drift_margin_ms.get_ref() * 2 >= ttl {
            self.issue(
                "timers.drift_margin_ms".into(),
                t.drift_margin_ms.span(),
                "must be less than half of timers.session_ttl_ms".into(),
            );
        }
        if t.handover_backoff_max_ms.get_ref() < t.handover_backoff_ms.get_ref() {
            self.issue(
                "timers.handover_backoff_max_ms".into(),
                t.handover_backoff_max_ms.span(),
                "must not be below timers.handover_backoff_ms".into(),
            );
        }
        // A batch is one log entry; one too large for a Raft message would stop replication.
        let max_changes = *t.batch_max_changes.get_ref();
        if !(1..=MAX_BATCH_CHANGES).contains(&max_changes) {
            self.issue(
                "timers.batch_max_changes".into(),
                t.batch_max_changes.span(),
                format!("{max_changes} is outside 1..={MAX_BATCH_CHANGES}"),
            );
        }
    }

    /// Returns the RTUs by id, with their protocol.
    fn rtus<'s>(&mut self, site: &'s Site) -> BTreeMap<String, &'s Rtu> {
        let mut ids = Unique::default();
        let mut rtus = BTreeMap::new();
        for (r, rtu) in site.rtus.iter().enumerate() {
            let path = format!("rtu[{r}]");
            self.unique(&mut ids, &format!("{path}.id"), &rtu.id, "RTU id");
            rtus.entry(rtu.id.get_ref().clone()).or_insert(rtu);
            let poll = *rtu.poll_interval_ms.get_ref();
            if poll < 10 {
                self.issue(
                    format!("{path}.poll_interval_ms"),
                    rtu.poll_interval_ms.span(),
                    format!("{poll} ms is too short (at least 10)"),
                );
            }
            if *rtu.timeout_ms.get_ref() == 0 {
                self.issue(
                    format!("{path}.timeout_ms"),
                    rtu.timeout_ms.span(),
                    "must be above 0".into(),
                );
            }
            if rtu.channels.is_empty() {
                self.issue(
                    path.clone(),
                    rtu.id.span(),
                    format!("RTU {} has no channel", rtu.id.get_ref()),
                );
            }
            self.protocol(&path, rtu);
            let mut names = Unique::default();
            for (c, channel) in rtu.channels.iter().enumerate() {
                let cpath = format!("{path}.channel[{c}]");
                self.unique(
                    &mut names,
                    &format!("{cpath}.name"),
                    &channel.name,
                    "channel name",
                );
                if channel.endpoints.is_empty() {
                    self.issue(
                        cpath.clone(),
                        channel.name.span(),
                        format!("channel {} has no endpoint", channel.name.get_ref()),
                    );
                }
                for (e, endpoint) in channel.endpoints.iter().enumerate() {
                    if let Err(why) = check_endpoint(endpoint.get_ref()) {
                        self.issue(format!("{cpath}.endpoints[{e}]"), endpoint.span(), why);
                    }
                }
            }
        }
        rtus
    }

    /// What the RTU's protocol asks of its entry.
    fn protocol(&mut self, path: &str, rtu: &Rtu) {
        match (rtu.protocol, &rtu.iec104) {
            (Protocol::Modbus, None) => {}
            (Protocol::Modbus, Some(t)) => self.issue(
                format!("{path}.iec104"),
                t.common_address.span(),
                "an [rtu.iec104] table is for iec104 RTUs; this one speaks Modbus".into(),
            ),
            (Protocol::Iec104, None) => self.issue(
                format!("{path}.iec104"),
                rtu.id.span(),
                format!(
                    "the iec104 RTU {} needs an [rtu.iec104] table with its common_address",
                    rtu.id.get_ref()
                ),
            ),
            (Protocol::Iec104, Some(t)) => self.iec104_rtu(&format!("{path}.iec104"), t),
        }
        if rtu.protocol == Protocol::Iec104 && rtu.standby == Standby::Hot {
            // A 104 device serves one started master per redundancy group: a second one
            // polling "read-only" would take the data transfer away from the owner.
            self.issue(
                format!("{path}.standby"),
                rtu.id.span(),
                "hot standby is for Modbus RTUs; a 104 device serves one started master at a \
                 time (use probe or cold)"
                    .into(),
            );
        }
    }

    fn iec104_rtu(&mut self, path: &str, t: &Iec104Rtu) {
        let ca = *t.common_address.get_ref();
        if ca == 0 || ca == 0xFFFF {
            self.issue(
                format!("{path}.common_address"),
                t.common_address.span(),
                format!("{ca} is reserved (0: unused, 65535: broadcast)"),
            );
        }
        let times = [
            ("t0_s", t.t0_s.span(), t.t0().err()),
            ("gi_period_s", t.gi_period_s.span(), t.gi_period().err()),
            (
                "counter_period_s",
                t.counter_period_s.span(),
                t.counter_period().err(),
            ),
            (
                "clock_sync_period_s",
                t.clock_sync_period_s.span(),
                t.clock_sync_period().err(),
            ),
        ];
        for (key, span, bad) in times {
            if let Some((_, why)) = bad {
                self.issue(format!("{path}.{key}"), span, why);
            }
        }
        match t.link_params() {
            Err((key, why)) => {
                let span = match key {
                    "t1_s" => t.t1_s.span(),
                    "t2_s" => t.t2_s.span(),
                    _ => t.t3_s.span(),
                };
                self.issue(format!("{path}.{key}"), span, why);
            }
            Ok(params) => {
                let (key, span) = match params.validate() {
                    Ok(()) => return self.command_timeout(path, t),
                    Err(ParamError::K(_)) => ("k", t.k.span()),
                    Err(ParamError::W { .. }) => ("w", t.w.span()),
                    Err(ParamError::T2NotBelowT1 { .. }) => ("t2_s", t.t2_s.span()),
                };
                if let Err(e) = params.validate() {
                    self.issue(format!("{path}.{key}"), span, e.to_string());
                }
            }
        }
        self.command_timeout(path, t);
    }

    fn command_timeout(&mut self, path: &str, t: &Iec104Rtu) {
        if *t.command_timeout_ms.get_ref() == 0 {
            self.issue(
                format!("{path}.command_timeout_ms"),
                t.command_timeout_ms.span(),
                "must be above 0".into(),
            );
        }
    }

    /// Returns the point ids.
    fn points(&mut self, site: &Site, rtus: &BTreeMap<String, &Rtu>) -> BTreeSet<String> {
        let mut ids = Unique::default();
        // Per RTU, the 104 addresses taken: (common address, type without time tag, IOA).
        let mut addresses: BTreeMap<String, Unique> = BTreeMap::new();
        for (p, point) in site.points.iter().enumerate() {
            let path = format!("point[{p}]");
            self.unique(&mut ids, &format!("{path}.id"), &point.id, "point id");
            let Some(rtu) = rtus.get(point.rtu.get_ref()) else {
                self.issue(
                    format!("{path}.rtu"),
                    point.rtu.span(),
                    format!("no RTU is called {:?}", point.rtu.get_ref()),
                );
                continue;
            };
            match rtu.protocol {
                Protocol::Modbus => self.modbus_point(&path, point),
                Protocol::Iec104 => {
                    let taken = addresses.entry(rtu.id.get_ref().clone()).or_default();
                    let ca = rtu
                        .iec104
                        .as_ref()
                        .map_or(0, |t| *t.common_address.get_ref());
                    self.iec104_point(&path, point, ca, taken);
                }
            }
            if let Some(deadband) = &point.deadband {
                let kind = *point.kind.get_ref();
                if kind != PointKind::Measured {
                    self.issue(
                        format!("{path}.deadband"),
                        deadband.span(),
                        format!("a deadband is for measured values; this point is {kind:?}"),
                    );
                } else if deadband.get_ref().is_nan() || *deadband.get_ref() < 0.0 {
                    self.issue(
                        format!("{path}.deadband"),
                        deadband.span(),
                        "must be zero or more".into(),
                    );
                }
            }
            if !point.scale.is_finite() || !point.offset.is_finite() {
                self.issue(
                    format!("{path}.scale"),
                    point.id.span(),
                    "scale and offset must be finite numbers".into(),
                );
            }
        }
        ids.seen.into_keys().collect()
    }

    fn modbus_point(&mut self, path: &str, point: &Point) {
        let kind = *point.kind.get_ref();
        let foreign = [
            ("type", point.type_id.as_ref().map(Spanned::span)),
            ("ioa", point.ioa.as_ref().map(Spanned::span)),
            (
                "common_address",
                point.common_address.as_ref().map(Spanned::span),
            ),
        ];
        for (key, span) in foreign {
            if let Some(span) = span {
                self.issue(
                    format!("{path}.{key}"),
                    span,
                    format!("`{key}` is for points of iec104 RTUs; use table and address"),
                );
            }
        }
        let (Some(table), Some(address)) = (&point.table, &point.address) else {
            self.issue(
                path.into(),
                point.id.span(),
                format!(
                    "the Modbus point {} needs a table and an address",
                    point.id.get_ref()
                ),
            );
            return;
        };
        let table_kind = *table.get_ref();
        let fits = match kind {
            PointKind::Single | PointKind::Double => table_kind.is_bits(),
            PointKind::Measured | PointKind::Counter => !table_kind.is_bits(),
            PointKind::SingleCommand | PointKind::DoubleCommand => table_kind == Table::Coil,
            PointKind::Setpoint => table_kind == Table::Holding,
            PointKind::Step | PointKind::Bitstring => {
                self.issue(
                    format!("{path}.kind"),
                    point.kind.span(),
                    format!("a {kind:?} point is for iec104 RTUs"),
                );
                return;
            }
        };
        if !fits {
            self.issue(
                format!("{path}.table"),
                table.span(),
                format!("a {kind:?} point cannot live in the {table_kind:?} table"),
            );
        }
        if let Some(format) = &point.format
            && table_kind.is_bits()
        {
            self.issue(
                format!("{path}.format"),
                format.span(),
                format!(
                    "{:?} is for registers, not for the {table_kind:?} table",
                    format.get_ref()
                ),
            );
        }
        let width = match (&point.format, kind) {
            (Some(f), _) => f.get_ref().registers(),
            (None, PointKind::Double) => 2,
            _ => 1,
        };
        let address = *address.get_ref();
        if u32::from(address) + u32::from(width) > 65_536 {
            self.issue(
                format!("{path}.address"),
                point.id.span(),
                format!("address {address} plus its width runs past 65535"),
            );
        }
        if matches!(
            point.format.as_ref().map(|f| *f.get_ref()),
            Some(Format::F32)
        ) && kind == PointKind::Counter
        {
            self.issue(
                format!("{path}.format"),
                point.id.span(),
                "a counter is an integer; f32 does not fit".into(),
            );
        }
    }

    fn iec104_point(&mut self, path: &str, point: &Point, rtu_ca: u16, taken: &mut Unique) {
        let kind = *point.kind.get_ref();
        let foreign = [
            ("table", point.table.as_ref().map(Spanned::span)),
            ("address", point.address.as_ref().map(Spanned::span)),
            ("format", point.format.as_ref().map(Spanned::span)),
        ];
        for (key, span) in foreign {
            if let Some(span) = span {
                self.issue(
                    format!("{path}.{key}"),
                    span,
                    format!("`{key}` is for points of Modbus RTUs; use type and ioa"),
                );
            }
        }
        let (Some(type_name), Some(ioa)) = (&point.type_id, &point.ioa) else {
            self.issue(
                path.into(),
                point.id.span(),
                format!(
                    "the 104 point {} needs a type and an ioa",
                    point.id.get_ref()
                ),
            );
            return;
        };
        let Some(type_id) = TypeId::from_mnemonic(type_name.get_ref()) else {
            self.issue(
                format!("{path}.type"),
                type_name.span(),
                format!(
                    "unknown type {:?} (the standard's mnemonic, such as M_SP_TB_1)",
                    type_name.get_ref()
                ),
            );
            return;
        };
        match kind_of(type_id) {
            None => self.issue(
                format!("{path}.type"),
                type_name.span(),
                format!("{} is not a type that carries a point", type_id.mnemonic()),
            ),
            Some(carries) if carries != kind => self.issue(
                format!("{path}.type"),
                type_name.span(),
                format!(
                    "{} carries a {carries:?} point; this point is {kind:?}",
                    type_id.mnemonic()
                ),
            ),
            Some(_) => {}
        }
        let number = *ioa.get_ref();
        if number == 0 || number > MAX_IOA {
            self.issue(
                format!("{path}.ioa"),
                ioa.span(),
                format!("{number} is outside 1..={MAX_IOA}"),
            );
        }
        let ca = match &point.common_address {
            Some(ca) => {
                let value = *ca.get_ref();
                if value == 0 || value == 0xFFFF {
                    self.issue(
                        format!("{path}.common_address"),
                        ca.span(),
                        format!("{value} is reserved (0: unused, 65535: broadcast)"),
                    );
                }
                value
            }
            None => rtu_ca,
        };
        let key = format!(
            "{} IOA {number} at common address {ca}",
            untimed(type_id).mnemonic()
        );
        self.unique(
            taken,
            &format!("{path}.ioa"),
            &Spanned::new(ioa.span(), key),
            "104 address",
        );
    }

    fn forwarders(&mut self, site: &Site, points: &BTreeSet<String>) {
        let (mut names, mut ports) = (Unique::default(), Unique::default());
        for (f, fwd) in site.forwarders.iter().enumerate() {
            let path = format!("forwarder[{f}]");
            self.unique(
                &mut names,
                &format!("{path}.name"),
                &fwd.name,
                "forwarder name",
            );
            let port = Spanned::new(fwd.port.span(), fwd.port.get_ref().to_string());
            self.unique(&mut ports, &format!("{path}.port"), &port, "forwarder port");
            let ca = *fwd.common_address.get_ref();
            if ca == 0 || ca == 0xFFFF {
                self.issue(
                    format!("{path}.common_address"),
                    fwd.common_address.span(),
                    format!("{ca} is reserved (0: unused, 65535: broadcast)"),
                );
            }
            if let Err(e) = fwd.link_params().and_then(|p| {
                p.validate().map_err(|e| e.to_string()).and(
                    (fwd.queue > 0)
                        .then_some(())
                        .ok_or("queue must be above 0".into()),
                )
            }) {
                self.issue(path.clone(), fwd.name.span(), e);
            }
            self.groups(&path, fwd);
            let mut ioas = Unique::default();
            for (m, map) in fwd.maps.iter().enumerate() {
                let mpath = format!("{path}.map[{m}]");
                if !points.contains(map.point.get_ref())
                    && !is_link_point(site, map.point.get_ref())
                {
                    self.issue(
                        format!("{mpath}.point"),
                        map.point.span(),
                        format!("no point is called {:?}", map.point.get_ref()),
                    );
                }
                let ioa = *map.ioa.get_ref();
                if ioa == 0 || ioa > MAX_IOA {
                    self.issue(
                        format!("{mpath}.ioa"),
                        map.ioa.span(),
                        format!("{ioa} is outside 1..={MAX_IOA}"),
                    );
                }
                let as_text = Spanned::new(map.ioa.span(), ioa.to_string());
                self.unique(&mut ioas, &format!("{mpath}.ioa"), &as_text, "IOA");
            }
        }
    }

    fn groups(&mut self, path: &str, fwd: &crate::site::Forwarder) {
        let (mut names, mut masters) = (Unique::default(), Unique::default());
        let mut catch_all = false;
        for (g, group) in fwd.groups.iter().enumerate() {
            let gpath = format!("{path}.group[{g}]");
            self.unique(
                &mut names,
                &format!("{gpath}.name"),
                &group.name,
                "group name",
            );
            if group.masters.is_empty() {
                if catch_all {
                    self.issue(
                        format!("{gpath}.masters"),
                        group.name.span(),
                        "only one group may leave `masters` empty (it takes everyone else)".into(),
                    );
                }
                catch_all = true;
            }
            for (i, master) in group.masters.iter().enumerate() {
                let mpath = format!("{gpath}.masters[{i}]");
                match master.get_ref().parse::<std::net::IpAddr>() {
                    Ok(ip) => {
                        let text = Spanned::new(master.span(), ip.to_string());
                        self.unique(&mut masters, &mpath, &text, "master address");
                    }
                    Err(_) => self.issue(
                        mpath,
                        master.span(),
                        format!("{:?} is not an IP address", master.get_ref()),
                    ),
                }
            }
        }
    }

    fn unique(&mut self, seen: &mut Unique, path: &str, value: &Spanned<String>, what: &str) {
        let key = value.get_ref().clone();
        if key.is_empty() {
            self.issue(path.into(), value.span(), format!("the {what} is empty"));
        } else if let Some(first) = seen.seen.get(&key) {
            let message = format!("duplicate {what} {key:?} (first at {first})");
            self.issue(path.into(), value.span(), message);
        } else {
            let line = self.line(value.span().start);
            seen.seen.insert(key, format!("{path}, line {line}"));
        }
    }
}

/// Values already seen, with where.
#[derive(Default)]
struct Unique {
    seen: BTreeMap<String, String>,
}

/// A link-status point (see `state::links`): `<rtu>.link`, or
/// `<rtu>.link.<node>.<channel>.<endpoint index>` for a channel and endpoint the RTU has (the
/// node is any node name: nodes are not part of the site configuration).
fn is_link_point(site: &Site, id: &str) -> bool {
    site.rtus.iter().any(|rtu| {
        let Some(rest) = id.strip_prefix(&format!("{}.link", rtu.id.get_ref())) else {
            return false;
        };
        if rest.is_empty() {
            return true;
        }
        let Some((node, rest)) = rest.strip_prefix('.').and_then(|r| r.split_once('.')) else {
            return false;
        };
        let Some((channel, index)) = rest.rsplit_once('.') else {
            return false;
        };
        let index: Option<usize> = index.parse().ok();
        !node.is_empty()
            && rtu.channels.iter().any(|c| {
                *c.name.get_ref() == channel && index.is_some_and(|i| i < c.endpoints.len())
            })
    })
}

/// `host:port`, where host is an IP address or a DNS name.
fn check_endpoint(text: &str) -> Result<(), String> {
    if text.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("{text:?} is not host:port");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let name_ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if port == 0 || !name_ok {
        return Err(bad());
    }
    Ok(())
}
