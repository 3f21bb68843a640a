//! Where a conversion writes: a staging path next to the target, renamed over it only at the end.
//!
//! A conversion that fails (bad input, a full disk, Ctrl-C) must not leave a half-written model where a user
//! or another tool would load it. Writing happens in `<target>.partial-<pid>` (same folder, so the final
//! rename is atomic on one filesystem); [`Staged::commit`] renames it into place, and dropping an uncommitted
//! [`Staged`] deletes it. An existing target is an error unless `force` is set; with `force` it is replaced
//! only at commit time, so a failed forced conversion keeps the old output.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Whether the target is one file (a GGUF) or a folder (Hugging Face / MLX layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Folder,
}

/// A staging file or folder that becomes `target` on [`Staged::commit`].
#[derive(Debug)]
pub struct Staged {
    target: PathBuf,
    staging: PathBuf,
    kind: Kind,
    force: bool,
    committed: bool,
}

impl Staged {
    /// Checks the target (refused if it exists and `force` is off, or if its parent folder is missing) and
    /// creates an empty staging file or folder beside it.
    pub fn new(target: &Path, kind: Kind, force: bool) -> Result<Staged> {
        if target.exists() && !force {
            return Err(Error::format(
                target,
                "already exists; pass --force to replace it",
            ));
        }
        let name = target
            .file_name()
            .ok_or_else(|| Error::format(target, "output path has no file name"))?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(Error::format(
                &parent,
                "output folder does not exist (create it first)",
            ));
        }
        let mut staging_name = name.to_os_string();
        staging_name.push(format!(".partial-{}", std::process::id()));
        let staging = parent.join(staging_name);
        // A leftover from a crashed run of this same process id is ours to replace.
        remove_path(&staging);
        match kind {
            Kind::File => std::fs::File::create(&staging).map(|_| ()),
            Kind::Folder => std::fs::create_dir(&staging),
        }
        .map_err(|e| Error::io(&staging, e))?;
        Ok(Staged {
            target: target.to_path_buf(),
            staging,
            kind,
            force,
            committed: false,
        })
    }

    /// The path to write: the staging file itself, or the staging folder to write files into.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Moves the staging path into place (replacing an existing target when forced).
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.target.exists() {
            if !self.force {
                return Err(Error::format(
                    &self.target,
                    "appeared while converting; pass --force to replace it",
                ));
            }
            // A folder cannot be renamed over a non-empty folder: move the old one aside first, so that a
            // failure here still leaves one complete model on disk.
            let mut aside = self.staging.clone().into_os_string();
            aside.push(".old");
            let aside = PathBuf::from(aside);
            remove_path(&aside);
            std::fs::rename(&self.target, &aside).map_err(|e| Error::io(&self.target, e))?;
            if let Err(e) = std::fs::rename(&self.staging, &self.target) {
                let _ = std::fs::rename(&aside, &self.target);
                return Err(Error::io(&self.target, e));
            }
            remove_path(&aside);
        } else {
            std::fs::rename(&self.staging, &self.target).map_err(|e| Error::io(&self.target, e))?;
        }
        if self.kind == Kind::File {
            // The data is on disk before anyone is told it is done.
            if let Ok(f) = std::fs::File::open(&self.target) {
                let _ = f.sync_all();
            }
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            remove_path(&self.staging);
        }
    }
}

fn remove_path(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hearth-output-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn dropped_staging_leaves_nothing() {
        let d = tmp("drop");
        let target = d.join("out");
        {
            let s = Staged::new(&target, Kind::Folder, false).unwrap();
            std::fs::write(s.path().join("a.bin"), b"x").unwrap();
        }
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        assert!(!target.exists());
    }

    #[test]
    fn existing_target_needs_force_and_survives_a_failed_forced_run() {
        let d = tmp("force");
        let target = d.join("m.gguf");
        std::fs::write(&target, b"old").unwrap();
        let err = Staged::new(&target, Kind::File, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        {
            let s = Staged::new(&target, Kind::File, true).unwrap();
            std::fs::write(s.path(), b"half").unwrap();
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        let s = Staged::new(&target, Kind::File, true).unwrap();
        std::fs::write(s.path(), b"new").unwrap();
        s.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    }

    #[test]
    fn forced_folder_replaces_old_folder() {
        let d = tmp("folder");
        let target = d.join("out");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("stale.txt"), b"x").unwrap();
        let s = Staged::new(&target, Kind::Folder, true).unwrap();
        std::fs::write(s.path().join("config.json"), b"{}").unwrap();
        s.commit().unwrap();
        assert!(target.join("config.json").exists());
        assert!(!target.join("stale.txt").exists());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    }
}
