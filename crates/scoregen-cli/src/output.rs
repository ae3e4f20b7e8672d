//! All-or-nothing output.
//!
//! A command registers its inputs ([`Outputs::input`]) and asks for a staging path for each
//! file or directory it will write ([`Outputs::file`], [`Outputs::dir`]). Everything is
//! written into a staging directory `.scoregen-stage-PID-K` next to its target; only when
//! the whole command has succeeded does [`Outputs::commit`] rename each output into place.
//! If the command fails (or panics), dropping the [`Outputs`] removes the staging
//! directories, so an existing file is never touched before its replacement is complete and
//! no partial output is left behind.
//!
//! An output that is (or, for a directory, contains) one of the command's inputs is refused
//! before any work is done, so a command can never overwrite the data it reads.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{CliError, CliResult};

/// Whether a staged output is a file or a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

/// One output: where it is being written and where it goes.
#[derive(Debug)]
struct Staged {
    option: String,
    target: PathBuf,
    tmp: PathBuf,
    kind: Kind,
}

/// The inputs and staged outputs of one command (see the module docs).
#[derive(Debug, Default)]
pub struct Outputs {
    inputs: Vec<(String, PathBuf)>,
    staged: Vec<Staged>,
    /// Staging directory per target directory (canonical path).
    stage_dirs: HashMap<PathBuf, PathBuf>,
}

/// `path`'s directory (`.` for a bare file name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The absolute, symlink-free form of `path`, which need not exist (its parent must).
fn resolve(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = fs::canonicalize(path) {
        return Some(p);
    }
    let parent = fs::canonicalize(parent_of(path)).ok()?;
    Some(parent.join(path.file_name()?))
}

/// Whether `a` and `b` name the same existing file (same device and inode on Unix).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (fs::metadata(a), fs::metadata(b)) {
            return ma.dev() == mb.dev() && ma.ino() == mb.ino();
        }
        false
    }
    #[cfg(not(unix))]
    {
        matches!((resolve(a), resolve(b)), (Some(x), Some(y)) if x == y)
    }
}

impl Outputs {
    /// No inputs, no outputs yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an input file or directory read by the command under `option`
    /// (`--data`, `--model`, ...). Built-in names (`builtin:...`) are not paths: skip them.
    pub fn input(&mut self, option: &str, path: impl AsRef<Path>) {
        self.inputs.push((option.to_string(), path.as_ref().to_path_buf()));
    }

    /// Refuses `target` if writing it would overwrite or remove an input, or another output.
    fn check(&self, option: &str, target: &Path, kind: Kind) -> CliResult<()> {
        let parent = parent_of(target);
        if !parent.is_dir() {
            return Err(CliError::user(format!(
                "{option} {}: directory {} does not exist",
                target.display(),
                parent.display()
            )));
        }
        if target.file_name().is_none() {
            return Err(CliError::user(format!(
                "{option} {}: not a file name",
                target.display()
            )));
        }
        match kind {
            Kind::File if target.is_dir() => {
                return Err(CliError::user(format!(
                    "{option} {}: is a directory, expected a file name",
                    target.display()
                )))
            }
            Kind::Dir if target.exists() && !target.is_dir() => {
                return Err(CliError::user(format!(
                    "{option} {}: is a file, expected a directory",
                    target.display()
                )))
            }
            _ => {}
        }
        let t = resolve(target)
            .ok_or_else(|| CliError::user(format!("{option} {}: cannot resolve the path", target.display())))?;
        for (in_opt, input) in &self.inputs {
            let i = resolve(input);
            let clash = same_file(target, input)
                || i.as_ref() == Some(&t)
                || (kind == Kind::Dir && i.as_ref().is_some_and(|i| i.starts_with(&t)));
            if clash {
                return Err(CliError::user(format!(
                    "{option} {} would overwrite the input {in_opt} {}: choose another output path",
                    target.display(),
                    input.display()
                )));
            }
        }
        for s in &self.staged {
            let other = resolve(&s.target);
            let clash = other.as_ref() == Some(&t)
                || (s.kind == Kind::Dir && other.as_ref().is_some_and(|o| t.starts_with(o)))
                || (kind == Kind::Dir && other.as_ref().is_some_and(|o| o.starts_with(&t)));
            if clash {
                return Err(CliError::user(format!(
                    "{option} {} and {} {} are the same output: give them different paths",
                    target.display(),
                    s.option,
                    s.target.display()
                )));
            }
        }
        Ok(())
    }

    /// The staging directory next to `target` (created on first use).
    fn stage_dir(&mut self, target: &Path) -> CliResult<PathBuf> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let parent = parent_of(target);
        let key = fs::canonicalize(&parent).unwrap_or_else(|_| parent.clone());
        if let Some(d) = self.stage_dirs.get(&key) {
            return Ok(d.clone());
        }
        for _ in 0..100 {
            let k = COUNTER.fetch_add(1, Ordering::Relaxed);
            let d = parent.join(format!(".scoregen-stage-{}-{k}", std::process::id()));
            match fs::create_dir(&d) {
                Ok(()) => {
                    self.stage_dirs.insert(key, d.clone());
                    return Ok(d);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(CliError::user(format!(
                        "{}: cannot write in directory {}: {e}",
                        target.display(),
                        parent.display()
                    )))
                }
            }
        }
        Err(CliError::user(format!(
            "{}: cannot create a staging directory in {}",
            target.display(),
            parent.display()
        )))
    }

    fn stage(&mut self, option: &str, target: &Path, kind: Kind) -> CliResult<PathBuf> {
        self.check(option, target, kind)?;
        let dir = self.stage_dir(target)?;
        let name = target.file_name().expect("checked above");
        let tmp = dir.join(name);
        self.staged.push(Staged {
            option: option.to_string(),
            target: target.to_path_buf(),
            tmp: tmp.clone(),
            kind,
        });
        Ok(tmp)
    }

    /// Checks that `target` (given by `option`) overwrites no input and no other output, and
    /// returns the staging path to write the file to. Call before any long work, so that a
    /// bad path fails at once.
    pub fn file(&mut self, option: &str, target: impl AsRef<Path>) -> CliResult<PathBuf> {
        self.stage(option, target.as_ref(), Kind::File)
    }

    /// As [`Outputs::file`], for a directory the command creates and fills (an existing
    /// directory at `target` is replaced as a whole on commit).
    pub fn dir(&mut self, option: &str, target: impl AsRef<Path>) -> CliResult<PathBuf> {
        self.stage(option, target.as_ref(), Kind::Dir)
    }

    /// Renames every staged output that was written into place, then removes the staging
    /// directories. An output that was staged but not written is skipped.
    pub fn commit(mut self) -> CliResult<()> {
        let staged = std::mem::take(&mut self.staged);
        for s in &staged {
            if !s.tmp.exists() {
                continue;
            }
            let fail = |e: std::io::Error| {
                CliError::user(format!(
                    "{} {}: cannot move into place: {e}",
                    s.option,
                    s.target.display()
                ))
            };
            match s.kind {
                Kind::File => fs::rename(&s.tmp, &s.target).map_err(fail)?,
                Kind::Dir => {
                    if s.target.exists() {
                        // A directory cannot be renamed over a non-empty one: move the old one
                        // into the staging directory first, then remove it.
                        let old = parent_of(&s.tmp).join(".old");
                        fs::rename(&s.target, &old).map_err(fail)?;
                        if let Err(e) = fs::rename(&s.tmp, &s.target) {
                            let _ = fs::rename(&old, &s.target);
                            return Err(fail(e));
                        }
                        let _ = fs::remove_dir_all(&old);
                    } else {
                        fs::rename(&s.tmp, &s.target).map_err(fail)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        for d in self.stage_dirs.values() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("scoregen-output-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn refuses_an_output_that_is_an_input() {
        let d = tmpdir("same");
        let data = d.join("t.csv");
        fs::write(&data, "a\n1\n").unwrap();
        let mut o = Outputs::new();
        o.input("--data", &data);
        // The same file by another spelling, and through a hard link.
        let other = d.join(".").join("t.csv");
        assert!(o.file("--out", &other).is_err());
        fs::hard_link(&data, d.join("link.csv")).unwrap();
        assert!(o.file("--out", d.join("link.csv")).is_err());
        // A directory output that contains the input.
        assert!(o.dir("--save-model", &d).is_err());
        assert_eq!(fs::read_to_string(&data).unwrap(), "a\n1\n");
        drop(o);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn nothing_moves_until_commit_and_nothing_is_left_on_failure() {
        let d = tmpdir("commit");
        let out = d.join("out.csv");
        fs::write(&out, "old").unwrap();
        let mut o = Outputs::new();
        let tmp = o.file("--out", &out).unwrap();
        fs::write(&tmp, "new").unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap(), "old");
        drop(o); // failure: the old file stays, the staging directory goes
        assert_eq!(fs::read_to_string(&out).unwrap(), "old");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);

        let mut o = Outputs::new();
        let tmp = o.file("--out", &out).unwrap();
        fs::write(&tmp, "new").unwrap();
        let m = o.dir("--model", d.join("model")).unwrap();
        fs::create_dir(&m).unwrap();
        fs::write(m.join("w"), "w").unwrap();
        o.commit().unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap(), "new");
        assert_eq!(fs::read_to_string(d.join("model/w")).unwrap(), "w");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 2, "no staging directory left");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn two_outputs_with_one_path_are_refused() {
        let d = tmpdir("twice");
        let mut o = Outputs::new();
        o.file("--out", d.join("a.png")).unwrap();
        assert!(o.file("--image-grid", d.join("a.png")).is_err());
        drop(o);
        fs::remove_dir_all(&d).unwrap();
    }
}
