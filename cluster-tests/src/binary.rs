//! Finding the `fepha` binary under test.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// `$FEPHA_BIN`, else `<target>/<profile>/fepha` next to the running executable (tests run
/// from `<target>/debug/deps/`, the benchmark from `<target>/release/`).
pub fn fepha_binary(profile: Profile) -> PathBuf {
    if let Some(path) = std::env::var_os("FEPHA_BIN") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "FEPHA_BIN={} is not a file", path.display());
        return path;
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let target = target_dir(&exe).unwrap_or_else(|| {
        panic!(
            "cannot find the target directory above {}; set FEPHA_BIN",
            exe.display()
        )
    });
    let bin = target.join(profile.dir()).join("fepha");
    let build = match profile {
        Profile::Debug => "cargo build --bin fepha",
        Profile::Release => "cargo build --release --bin fepha",
    };
    assert!(
        bin.is_file(),
        "{} does not exist: run `{build}` first (or set FEPHA_BIN)",
        bin.display()
    );
    bin
}

fn target_dir(exe: &Path) -> Option<PathBuf> {
    exe.ancestors()
        .find(|d| {
            matches!(
                d.file_name().and_then(|n| n.to_str()),
                Some("debug" | "release")
            )
        })
        .and_then(Path::parent)
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_dir_from_test_and_bin_paths() {
        assert_eq!(
            target_dir(Path::new("/w/target/debug/deps/bootstrap-123")),
            Some(PathBuf::from("/w/target"))
        );
        assert_eq!(
            target_dir(Path::new("/w/target/release/fepha-bench")),
            Some(PathBuf::from("/w/target"))
        );
    }
}
