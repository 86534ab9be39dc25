// Generates the gRPC code with a vendored protoc, so that building fepha needs no system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/raft.proto", "proto/peer.proto", "proto/admin.proto"],
        &["proto"],
    )?;
    commit();
    Ok(())
}

/// Passes the commit being built to the code (for `fepha_build_info` and `--version`), and
/// rebuilds when HEAD moves. Outside a git checkout (a source package) there is none.
fn commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=FEPHA_COMMIT={commit}");
    }
    // HEAD names the branch; the branch's ref file is what a commit changes.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    // A ref may live in packed-refs only; a missing file would rerun this on every build.
    let paths = ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref());
    for path in paths {
        if let Some(file) = git(&["rev-parse", "--git-path", path])
            && std::path::Path::new(&file).exists()
        {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
}
