//! Compiles `proto/` with protox (pure Rust: no system `protoc` needed) and
//! generates the tonic server and client code, plus the descriptor set
//! served by gRPC reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    build_info();
    let protos = ["proto/switchyard/v1/broker.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("switchyard_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Bulk output as `Bytes`: a receiver's message shares the buffer it
        // was read into instead of copying each chunk out of it.
        .bytes(".switchyard.v1.CommandOutput.data")
        // File transfer chunks likewise (every bytes field of both).
        .bytes(".switchyard.v1.FileDownloadEvent")
        .bytes(".switchyard.v1.FileUploadInput")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

/// `SWITCHYARD_COMMIT` and `SWITCHYARD_BUILD_DATE` for `--version`. The
/// commit comes from `$SWITCHYARD_COMMIT` (a tarball build can set it),
/// else `git` when the source is a checkout, else "unknown"; the date is
/// `$SOURCE_DATE_EPOCH`'s (reproducible builds) or today's, in UTC.
fn build_info() {
    println!("cargo:rerun-if-env-changed=SWITCHYARD_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let commit = std::env::var("SWITCHYARD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
            // Rebuild the info when HEAD moves (a checkout or a commit).
            for path in [
                Some("HEAD".to_string()),
                git(&["symbolic-ref", "-q", "HEAD"]),
            ]
            .into_iter()
            .flatten()
            {
                if let Some(file) = git(&["rev-parse", "--git-path", &path]) {
                    println!("cargo:rerun-if-changed={file}");
                }
            }
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
            Some(if dirty {
                format!("{commit}-modified")
            } else {
                commit
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    println!("cargo:rustc-env=SWITCHYARD_COMMIT={commit}");
    println!("cargo:rustc-env=SWITCHYARD_BUILD_DATE={y:04}-{m:02}-{d:02}");
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
