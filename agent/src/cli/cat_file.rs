//! The objects of a local SHA-256 repository, which libgit2 (0.21) cannot
//! open, for `driftless verify`: read with `git cat-file --batch`, and
//! nothing git says believed. Every object's id is computed again, in
//! process, from the type, size and bytes git hands over, and an object
//! whose id is not the one asked for is refused; the only things taken
//! from git unchecked are the names: which object a tag ref or a revision
//! names (the tag's own signed name must still match, as with libgit2).

use std::cell::RefCell;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context as _, bail};

use crate::release::tree::ObjectSource;
use crate::source::pack::{MAX_OBJECT_LEN, ObjectFormat, ObjectHasher, ObjectId, ObjectKind};

/// The longest header line `cat-file --batch` may answer with.
const MAX_HEADER: u64 = 256;

/// A running `git cat-file --batch` in one repository.
pub struct GitObjects {
    git_dir: PathBuf,
    format: ObjectFormat,
    batch: RefCell<Batch>,
}

struct Batch {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
}

/// The repository directory git should use for `dir` (a work tree or a
/// bare repository), never searched for above it.
pub fn git_dir(dir: &Path) -> PathBuf {
    let dot_git = dir.join(".git");
    if dot_git.exists() {
        dot_git
    } else {
        dir.to_path_buf()
    }
}

/// The object format of the repository at `dir`, as git reads it
/// (`rev-parse --show-object-format`); `None` when git cannot tell.
pub fn object_format(dir: &Path) -> Option<ObjectFormat> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir(dir))
        .args(["rev-parse", "--show-object-format"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    ObjectFormat::from_name(String::from_utf8_lossy(&out.stdout).trim())
}

impl GitObjects {
    /// Starts `git cat-file --batch` in the `format` repository at `dir`.
    pub fn open(dir: &Path, format: ObjectFormat) -> anyhow::Result<Self> {
        let git_dir = git_dir(dir);
        let mut child = Command::new("git")
            .arg("--git-dir")
            .arg(&git_dir)
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run git cat-file (git is needed to read a SHA-256 repository)")?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("git cat-file started without its pipes");
        };
        Ok(Self {
            git_dir,
            format,
            batch: RefCell::new(Batch {
                child,
                input: Some(input),
                output: BufReader::new(output),
            }),
        })
    }

    /// The object `rev` names, as `git rev-parse --verify` resolves it (a
    /// name only: the object is read and checked by its id afterwards).
    pub fn resolve(&self, rev: &str) -> anyhow::Result<Option<ObjectId>> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&self.git_dir)
            .args(["rev-parse", "--verify", "--quiet", "--end-of-options", rev])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .context("cannot run git rev-parse")?;
        if !out.status.success() {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        match ObjectId::from_hex_in(self.format, text.trim()) {
            Some(id) => Ok(Some(id)),
            None => bail!(
                "git rev-parse named {:?}, not a {} id",
                text.trim(),
                self.format.name()
            ),
        }
    }

    fn read(&self, id: &ObjectId) -> Result<(ObjectKind, Vec<u8>), String> {
        let failed = |e: std::io::Error| format!("reading object {id} from git cat-file: {e}");
        let mut batch = self.batch.borrow_mut();
        let Batch { input, output, .. } = &mut *batch;
        let input = input.as_mut().ok_or("git cat-file has ended")?;
        writeln!(input, "{id}")
            .and_then(|()| input.flush())
            .map_err(failed)?;
        let mut header = Vec::new();
        output
            .by_ref()
            .take(MAX_HEADER)
            .read_until(b'\n', &mut header)
            .map_err(failed)?;
        let header = String::from_utf8_lossy(&header);
        let mut fields = header.trim_end_matches('\n').split(' ');
        let (Some(named), Some(kind)) = (fields.next(), fields.next()) else {
            return Err(format!("git cat-file answered {header:?} for object {id}"));
        };
        if kind == "missing" {
            return Err(format!("object {id} is not in the repository"));
        }
        let size: u64 = fields
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| named == id.to_hex() && fields.next().is_none())
            .ok_or_else(|| format!("git cat-file answered {header:?} for object {id}"))?;
        let kind = match kind {
            "commit" => ObjectKind::Commit,
            "tree" => ObjectKind::Tree,
            "blob" => ObjectKind::Blob,
            "tag" => ObjectKind::Tag,
            other => return Err(format!("object {id} is of unknown type {other:?}")),
        };
        if size > MAX_OBJECT_LEN {
            return Err(format!(
                "object {id} has {size} bytes; at most {MAX_OBJECT_LEN}"
            ));
        }
        let mut bytes = vec![0u8; size as usize + 1];
        output.read_exact(&mut bytes).map_err(failed)?;
        if bytes.pop() != Some(b'\n') {
            return Err(format!(
                "git cat-file's answer for object {id} does not end its line"
            ));
        }
        let mut hasher = ObjectHasher::object(self.format, kind.as_str(), size);
        hasher.update(&bytes);
        match hasher.finish() {
            Some(computed) if computed == *id => Ok((kind, bytes)),
            Some(computed) => Err(format!(
                "git handed over bytes whose id is {computed} for object {id}; refusing them"
            )),
            None => Err(format!("object {id} is a SHA-1 collision attack")),
        }
    }
}

impl ObjectSource for GitObjects {
    fn object(&self, id: &ObjectId) -> Result<(ObjectKind, Vec<u8>), String> {
        if id.format() != self.format {
            return Err(format!("{id} is not a {} id", self.format.name()));
        }
        self.read(id)
    }
}

impl Drop for GitObjects {
    fn drop(&mut self) {
        let batch = self.batch.get_mut();
        // Closing its input ends cat-file; kill it in case it does not.
        drop(batch.input.take());
        let _ = batch.child.kill();
        let _ = batch.child.wait();
    }
}
