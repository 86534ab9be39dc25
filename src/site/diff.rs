//! What applying a new site configuration would change: the RTUs, points and forwarders added,
//! removed or changed. RTUs that did not change keep their owner and connections.

use std::collections::BTreeMap;
use std::fmt;

use super::Site;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Added { what: &'static str, id: String },
    Removed { what: &'static str, id: String },
    Changed { what: &'static str, id: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added { what, id } => write!(f, "+ {what} {id}"),
            Change::Removed { what, id } => write!(f, "- {what} {id}"),
            Change::Changed { what, id } => write!(f, "~ {what} {id}"),
        }
    }
}

/// The changes from `old` to `new`, in file order: site, timers, RTUs, points, forwarders.
pub(crate) fn diff(old: &Site, new: &Site) -> Vec<Change> {
    let mut changes = Vec::new();
    if old.site != new.site {
        changes.push(Change::Changed {
            what: "site",
            id: new.site.name.get_ref().clone(),
        });
    }
    if old.timers != new.timers {
        changes.push(Change::Changed {
            what: "timers",
            id: String::new(),
        });
    }
    compare(
        &mut changes,
        "rtu",
        keyed(&old.rtus, |r| r.id.get_ref()),
        keyed(&new.rtus, |r| r.id.get_ref()),
    );
    compare(
        &mut changes,
        "point",
        keyed(&old.points, |p| p.id.get_ref()),
        keyed(&new.points, |p| p.id.get_ref()),
    );
    compare(
        &mut changes,
        "forwarder",
        keyed(&old.forwarders, |f| f.name.get_ref()),
        keyed(&new.forwarders, |f| f.name.get_ref()),
    );
    changes
}

fn keyed<T>(items: &[T], key: impl Fn(&T) -> &String) -> BTreeMap<String, &T> {
    items.iter().map(|i| (key(i).clone(), i)).collect()
}

fn compare<T: PartialEq>(
    changes: &mut Vec<Change>,
    what: &'static str,
    old: BTreeMap<String, &T>,
    new: BTreeMap<String, &T>,
) {
    for (id, item) in &new {
        match old.get(id) {
            None => changes.push(Change::Added {
                what,
                id: id.clone(),
            }),
            Some(before) if before != item => changes.push(Change::Changed {
                what,
                id: id.clone(),
            }),
            Some(_) => {}
        }
    }
    for id in old.keys().filter(|id| !new.contains_key(*id)) {
        changes.push(Change::Removed {
            what,
            id: id.clone(),
        });
    }
}
