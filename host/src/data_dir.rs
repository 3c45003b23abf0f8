//! DCP's data directory and the files it keeps there (the SQLite database,
//! the sealing key, plugin artifacts): private to the user DCP runs as.
//!
//! The directory is created 0700 and tightened to it if found wider, and
//! every file DCP writes is created 0600: the database holds password
//! hashes, session digests and sealed secrets, and the key opens the
//! latter, so no other local user may read either. Files from older
//! releases that are still 0644 become unreachable once their directory
//! is 0700.

use std::{io, path::Path};

/// Creates `dir` (and missing parents) readable only by DCP's user; an
/// existing `dir` readable by others is tightened to 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "data directory was readable by other users; making it 0700");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Creates `dir` (and missing parents) 0700 if missing, leaving an
/// existing one as it is: for directories that may not be DCP's alone
/// (where a SQLite database URL points).
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Writes `bytes` to `path`, replacing what was there, as a file only
/// DCP's user can read or write (0600, also when it existed).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write(path, bytes, false)
}

/// Creates `path` with `bytes`, 0600; fails if it exists, so two
/// processes creating it at once cannot both win.
pub fn create_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write(path, bytes, true)
}

fn write(path: &Path, bytes: &[u8], new: bool) -> io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // The mode given to `open` only applies to a file it creates.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)
}

/// Creates `path` empty and 0600 if it is missing (SQLite then gives its
/// `-wal` and `-shm` files the same mode).
pub fn touch_private(path: &Path) -> io::Result<()> {
    match create_private(path, b"") {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// The permission bits of `path` when group or others may read or write
/// it; `None` when only its owner can.
pub fn exposed_mode(path: &Path) -> io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        Ok((mode & 0o077 != 0).then_some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data/plugins");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("data")), 0o700);

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "an existing wide directory is tightened");

        let file = dir.join("a.wasm");
        std::fs::write(&file, b"old").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(exposed_mode(&file).unwrap(), Some(0o644));
        write_private(&file, b"new").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        assert_eq!(exposed_mode(&file).unwrap(), None);

        let db = dir.join("dcp.db");
        touch_private(&db).unwrap();
        touch_private(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert!(create_private(&db, b"x").is_err(), "never overwrites");
    }
}
