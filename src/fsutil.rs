//! File-system helpers shared by commands and daemons.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Creates `dir` and any missing parents with `mode` (existing ones are
/// left as they are).
pub fn create_dir_all_with_mode(dir: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
}

/// Creates `dir` (and missing parents) readable by its owner only.
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    create_dir_all_with_mode(dir, 0o700)
}

/// Writes `bytes` to `path` so a reader sees either the old content or all
/// of the new: a temporary file in the same directory, fsynced, renamed over
/// the target, then the directory fsynced so the rename survives a crash.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_content_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ready");
        super::write_atomically(&p, b"one\n").unwrap();
        super::write_atomically(&p, b"two\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
