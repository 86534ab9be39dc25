//! Replays the kept corpus of every fuzz target (fuzz/corpus/TARGET/, docs/fuzzing.md)
//! through the target's body, so that the inputs the fuzzer found interesting, crashes
//! that were fixed among them, stay checked on the stable toolchain without cargo-fuzz.

use std::path::Path;

#[test]
fn every_corpus_file_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, body) in fepha::fuzzing::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}: every target needs a corpus", dir.display()));
        let mut files: Vec<_> = entries
            .map(|e| {
                e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                    .path()
            })
            .filter(|p| p.is_file())
            .collect();
        assert!(!files.is_empty(), "{}: the corpus is empty", dir.display());
        // In name order, so that a failure names the same file every time.
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            // A panic here names the file: `cargo fuzz run NAME FILE` reproduces it.
            eprintln!("{name}: {}", file.display());
            body(&data);
        }
    }
}

/// The fuzz crate has one binary per body, named alike, and nothing else.
#[test]
fn every_target_has_a_fuzz_binary() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in fepha::fuzzing::TARGETS {
        let source = fuzz.join(format!("fuzz_targets/{name}.rs"));
        let text = std::fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        assert!(
            text.contains(&format!("fepha::fuzzing::{name}(data)")),
            "{} does not call fepha::fuzzing::{name}",
            source.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
}
