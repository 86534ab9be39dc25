//! The package's node.toml template (packaging/node.toml, installed as /etc/fepha/node.toml)
//! is a node configuration fepha loads, with every key of the example node and the paths the
//! systemd unit allows.

use std::collections::BTreeSet;
use std::path::Path;

use fepha::config::{NodeConfig, Role};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every key of a TOML document, tables as `table.key`.
fn keys(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join(path)).expect("read the file");
    let doc: toml::Table = text.parse().expect("TOML");
    let mut out = BTreeSet::new();
    for (k, v) in &doc {
        match v.as_table() {
            Some(t) => out.extend(t.keys().map(|inner| format!("{k}.{inner}"))),
            None => {
                out.insert(k.clone());
            }
        }
    }
    out
}

#[test]
fn the_template_loads_and_keeps_its_data_where_the_unit_may_write() {
    let config = NodeConfig::load(&Path::new(ROOT).join("packaging/node.toml"))
        .expect("the template is a valid node.toml");
    assert_eq!(config.data_dir, Path::new("/var/lib/fepha"));
    assert_eq!(config.role, Role::Voter);
    let unit = std::fs::read_to_string(Path::new(ROOT).join("packaging/fepha.service"))
        .expect("read the unit");
    assert!(unit.contains("\nReadWritePaths=/var/lib/fepha\n"), "{unit}");
    assert!(
        unit.contains("\nExecStart=/usr/bin/fepha run -c /etc/fepha/node.toml\n"),
        "{unit}"
    );
}

#[test]
fn the_template_has_every_key_of_the_example_node() {
    let template = keys("packaging/node.toml");
    let missing: Vec<_> = keys("examples/node1.toml")
        .difference(&template)
        .cloned()
        .collect();
    assert!(missing.is_empty(), "packaging/node.toml lacks {missing:?}");
    // And the optional field-side address, which a real box needs and the example omits.
    assert!(template.contains("field_source_ip"), "{template:?}");
}
