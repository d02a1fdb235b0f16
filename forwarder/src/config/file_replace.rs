//! Replacing a file whole: the new text goes to a temporary file beside it, is synced, and
//! is renamed over the old one, then the directory is synced. A failure at any point (a
//! full disk, a crash, power loss) leaves the old file or the new one, never a mix; a
//! truncate-and-write in place would leave a cut-off config that stops the next start.
//! The daemon rewrites two files so: the config (`rule add / remove`, `live.rs`) and its
//! state file (`daemon/state.rs`).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// Which step failed, with the I/O error as its source (not in the Display: print the
/// chain, `crate::error::chain`, for both).
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    #[error("finding the file {0}")]
    Locate(PathBuf, #[source] io::Error),
    #[error("writing the temporary file {0} (the file is as it was)")]
    Write(PathBuf, #[source] io::Error),
    #[error("renaming {0} over the file (the file is as it was)")]
    Rename(PathBuf, #[source] io::Error),
}

/// Replaces the content of `path` with `text`, keeping its mode and owner. A symlink is
/// followed: the file it names is replaced and the link stays. On error the file is as
/// it was and no temporary file is left.
pub fn replace(path: &Path, text: &[u8]) -> Result<(), ReplaceError> {
    let target = fs::canonicalize(path).map_err(|e| ReplaceError::Locate(path.into(), e))?;
    let meta = fs::metadata(&target).map_err(|e| ReplaceError::Locate(target.clone(), e))?;
    install(&target, text, meta.mode() & 0o7777, Some((meta.uid(), meta.gid())))
}

/// As [`replace`] for a file that may not exist yet (the daemon's state file): a new one
/// gets `mode` and this process's owner.
pub fn write_whole(path: &Path, text: &[u8], mode: u32) -> Result<(), ReplaceError> {
    if path.exists() {
        return replace(path, text);
    }
    install(path, text, mode, None)
}

/// Writes `text` to a temporary file beside `target` (mode, owner), syncs it, renames it
/// over `target` and syncs the directory.
fn install(
    target: &Path,
    text: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), ReplaceError> {
    let dir = target.parent().unwrap_or(Path::new("/"));
    let name = target.file_name().map_or("config".into(), |n| n.to_string_lossy());
    // Hidden and named after the process, so a leftover from a crash is recognisable and
    // two writers never share one.
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));

    if let Err(e) = write_synced(&tmp, text, mode, owner) {
        let _ = fs::remove_file(&tmp);
        return Err(ReplaceError::Write(tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, target) {
        let _ = fs::remove_file(&tmp);
        return Err(ReplaceError::Rename(tmp, e));
    }
    // The rename is done and visible: a failure to sync the directory cannot be undone
    // and only means the new name may not survive a power loss yet, so it is not an
    // error of the change (the caller would otherwise roll back the live rules while the
    // file already holds the new ones).
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), "syncing the directory after replacing {name}: {e}");
    }
    Ok(())
}

/// Creates `tmp` with `mode` and `owner`, writes `text` and syncs it.
fn write_synced(tmp: &Path, text: &[u8], mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    // A leftover of an earlier process with the same pid.
    let _ = fs::remove_file(tmp);
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode & 0o600).open(tmp)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    }
    // After the chown (which clears set-id bits) and unaffected by the umask.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(text)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_keeps_the_mode_and_follows_a_symlink() {
        let dir = std::env::temp_dir().join(format!("fwd-replace-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f.toml");
        fs::write(&file, "old").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.join("link.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();

        replace(&link, b"new text").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "new text");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o640);
        let mut names: Vec<_> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["f.toml", "link.toml"]);

        let none = dir.join("none");
        let e = replace(&none, b"x").unwrap_err();
        assert!(matches!(e, ReplaceError::Locate(..)), "{e:?}");
        // The I/O error is the source, shown after the step as it was when it was in Display.
        let io = fs::canonicalize(&none).unwrap_err();
        let shown = crate::error::chain(&e);
        assert_eq!(shown, format!("finding the file {}: {io}", none.display()));
        fs::remove_dir_all(&dir).unwrap();
    }
}
