//! The layering of src/ (docs/architecture.md, "Layers"), checked on the source itself: every
//! `crate::` and `super::` path of every file must point to its own layer's own module or to
//! a layer below. A new arrow that points up or sideways fails here with the file and path.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layer of a module, lowest first. Within the pure core and the leaves the modules are
/// ordered too, so that their arrows go one way only; runtime modules and the two services
/// stand side by side and may not use each other.
fn layer(module: &str) -> Option<f64> {
    let rules: &[(&str, f64)] = &[
        // Leaves: small types, generated code, mutual TLS, metrics, the stop signal.
        ("", 0.0),
        ("config", 0.0),
        ("ids", 0.1),
        ("proto", 0.2),
        ("tls", 0.3),
        ("metrics", 0.4),
        ("shutdown", 0.5),
        // The pure core: no sockets, no tasks, no node.
        ("iec104", 1.0),
        ("site", 1.1),
        ("state", 1.2),
        ("lease::plan", 1.3),
        ("lease::clock", 1.3),
        ("lease::tests", 1.3),
        ("forwarder::stream", 1.4),
        ("forwarder::groups", 1.4),
        ("forwarder::image", 1.4),
        ("forwarder::station", 1.5),
        ("forwarder::station_tests", 1.5),
        // openraft's type configuration and the state machine adapter.
        ("raft", 2.0),
        ("raft::state_machine", 2.0),
        // The handle every subsystem uses.
        ("cluster", 3.0),
        // The runtime.
        ("acquisition", 4.0),
        ("forwarder", 4.0),
        ("lease", 4.0),
        ("raft::network", 4.0),
        ("raft::service", 4.0),
        ("raft::quorum_watch", 4.0),
        ("raft::leader_watch", 4.0),
        ("raft::gauges", 4.0),
        ("sim", 4.0),
        // The fuzz targets' bodies (docs/fuzzing.md): over the core and the field decoders.
        ("fuzzing", 4.5),
        // The gRPC services.
        ("admin", 5.0),
        ("peer", 5.0),
        // The composition root, then the command line.
        ("node", 6.0),
        ("cli", 7.0),
        ("main", 7.0),
    ];
    rules
        .iter()
        .filter(|(prefix, _)| {
            prefix.is_empty() || module == *prefix || module.starts_with(&format!("{prefix}::"))
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, l)| *l)
}

/// The top-level module a module belongs to: arrows within one are its own business, unless
/// they point up a layer.
fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

/// Why the arrow from `from` to `to` (both module paths without `crate::`) is forbidden.
fn violation(from: &str, to: &str) -> Option<String> {
    let (Some(lf), Some(lt)) = (layer(from), layer(to)) else {
        return Some(format!(
            "{from} or {to} has no layer: add it to tests/layers.rs"
        ));
    };
    if top(to) == "admin" && !["admin", "cli", "node"].contains(&top(from)) {
        return Some("only admin, cli and node may use crate::admin".into());
    }
    if ["state", "site"].contains(&top(from)) && top(to) == "forwarder" {
        return Some("the data model may not use the forwarder".into());
    }
    if lt > lf {
        return Some(format!("points up (layer {lt} from layer {lf})"));
    }
    if lt == lf && top(from) != top(to) && !top(to).is_empty() {
        return Some(format!("points sideways, within layer {lf}"));
    }
    None
}

/// The module a file under src/ is, as a path without `crate::`.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// The module of a path (as written after `crate::`), as far as it names modules: the longest
/// prefix that is a file or directory of src/.
fn resolve(src: &Path, segments: &[&str]) -> String {
    let mut known = Vec::new();
    for (i, _) in segments.iter().enumerate() {
        let dir: PathBuf = segments[..=i].iter().collect();
        if src.join(&dir).with_extension("rs").is_file() || src.join(&dir).join("mod.rs").is_file()
        {
            known = segments[..=i].to_vec();
        } else {
            break;
        }
    }
    known.join("::")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every module path a file names through `crate::` or `super::`, with its line number.
fn arrows(src: &Path, file: &Path, text: &str) -> Vec<(usize, String)> {
    let module = module_of(file.strip_prefix(src).unwrap_or(file));
    let is_mod = matches!(
        file.file_name().and_then(|n| n.to_str()),
        Some("mod.rs" | "lib.rs" | "main.rs")
    );
    let mut parent: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    if !is_mod {
        parent.pop();
    }
    let own: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    let mut inline = false;
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        // Inside an inline module (the tests, as a rule) `super` is the file's own module.
        let trimmed = code.trim_start();
        if (trimmed.starts_with("mod ") || trimmed.starts_with("pub mod "))
            && trimmed.trim_end().ends_with('{')
        {
            inline = true;
        }
        let sup = if inline { own.clone() } else { parent.clone() };
        for (prefix, base) in [("crate::", Vec::new()), ("super::", sup)] {
            let mut rest = code;
            while let Some(at) = rest.find(prefix) {
                let before = rest[..at].chars().next_back();
                rest = &rest[at + prefix.len()..];
                if before.is_some_and(is_ident) {
                    continue;
                }
                let heads: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                    let inner = group.split('}').next().unwrap_or("");
                    inner
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                } else {
                    vec![
                        rest.chars()
                            .take_while(|c| is_ident(*c) || *c == ':')
                            .collect(),
                    ]
                };
                for head in heads {
                    // `super::*` is how a test module reads what it tests.
                    if prefix == "super::" && head.is_empty() {
                        continue;
                    }
                    let mut segments = base.clone();
                    segments.extend(head.split("::").filter(|s| !s.is_empty() && *s != "self"));
                    let target = resolve(src, &segments);
                    found.push((n + 1, target));
                }
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_arrow_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 50, "src/ not found at {}", src.display());
    let mut wrong = BTreeSet::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let from = module_of(file.strip_prefix(&src).expect("under src"));
        for (line, to) in arrows(&src, file, &text) {
            checked += 1;
            if let Some(why) = violation(&from, &to) {
                let rel = file
                    .strip_prefix(&src)
                    .unwrap_or(file)
                    .display()
                    .to_string();
                wrong.insert(format!("src/{rel}:{line}: {from} uses {to}: {why}"));
            }
        }
    }
    assert!(
        checked > 200,
        "only {checked} arrows found: the reader is broken"
    );
    assert!(
        wrong.is_empty(),
        "forbidden arrows:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_checker_refuses_what_the_layers_forbid() {
    assert!(violation("state", "forwarder::serve").is_some());
    assert!(violation("site", "forwarder::image").is_some());
    assert!(violation("forwarder::station", "forwarder::connection").is_some());
    assert!(violation("iec104", "node").is_some());
    assert!(violation("lease::plan", "cluster").is_some());
    assert!(violation("acquisition::rtu", "admin").is_some());
    assert!(violation("raft::quorum_watch", "admin").is_some());
    assert!(violation("acquisition::rtu", "forwarder::serve").is_some());
    assert!(violation("cluster", "acquisition").is_some());
    assert!(violation("state", "raft").is_some());
    // And allows what they allow.
    assert!(violation("forwarder::connection", "forwarder::station").is_none());
    assert!(violation("forwarder::image", "state::points").is_none());
    assert!(violation("acquisition::rtu", "cluster").is_none());
    assert!(violation("node", "admin").is_none());
    assert!(violation("cli::point", "admin").is_none());
    assert!(violation("raft", "state").is_none());

    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let file = src.join("forwarder").join("station.rs");
    let text = "use super::serve::Served;\nuse crate::{iec104::Asdu, node};\n// crate::admin\n";
    let found = arrows(&src, &file, text);
    assert_eq!(
        found,
        vec![
            (1, "forwarder::serve".to_owned()),
            (2, "iec104".to_owned()),
            (2, "node".to_owned()),
        ]
    );
}
