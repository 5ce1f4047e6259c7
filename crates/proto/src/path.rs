//! Remote paths: absolute, `/`-separated, validated once at the edge.

use std::fmt;

use crate::ProtoError;

pub const MAX_PATH_LEN: usize = 4096;
pub const MAX_NAME_LEN: usize = 255;

/// A normalised absolute path such as `/photos/2024/a.jpg`; the root is `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RemotePath(String);

impl RemotePath {
    pub fn root() -> Self {
        RemotePath("/".into())
    }

    /// Accepts `a/b`, `/a/b`, `/a/b/`; rejects `..`, `.`, empty names, NUL, over-long input.
    pub fn parse(input: &str) -> Result<Self, ProtoError> {
        let bad = |reason| ProtoError::InvalidPath { path: input.chars().take(100).collect(), reason };
        if input.len() > MAX_PATH_LEN {
            return Err(bad("longer than 4096 bytes"));
        }
        if input.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        let mut out = String::with_capacity(input.len() + 1);
        for name in input.split('/').filter(|n| !n.is_empty()) {
            if name == "." || name == ".." {
                return Err(bad("`.` and `..` are not allowed"));
            }
            if name.len() > MAX_NAME_LEN {
                return Err(bad("a name is longer than 255 bytes"));
            }
            out.push('/');
            out.push_str(name);
        }
        if out.is_empty() {
            out.push('/');
        }
        // The normal form is what is stored and sent: a relative input of 4,096 bytes gains a
        // leading `/` here, and must not become a path that no longer parses.
        if out.len() > MAX_PATH_LEN {
            return Err(bad("longer than 4096 bytes"));
        }
        Ok(RemotePath(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The parent directory; the root is its own parent.
    pub fn parent(&self) -> RemotePath {
        match self.0.rfind('/') {
            Some(0) | None => RemotePath::root(),
            Some(i) => RemotePath(self.0[..i].to_string()),
        }
    }

    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    pub fn join(&self, name: &str) -> Result<RemotePath, ProtoError> {
        RemotePath::parse(&format!("{}/{}", self.0, name))
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RemotePath) -> bool {
        other.is_root() || self.0 == other.0 || self.0.starts_with(&format!("{}/", other.0))
    }
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `path_parse` fuzzer: 4,096 bytes without a leading `/` were accepted, and
    /// their normal form (one byte longer) was then refused.
    #[test]
    fn a_path_whose_normal_form_is_too_long_is_refused_and_every_accepted_path_reparses() {
        let name = "n".repeat(200);
        let relative: String =
            std::iter::repeat_n(name.as_str(), 20).collect::<Vec<_>>().join("/") + "/" + &"x".repeat(76);
        assert_eq!(relative.len(), MAX_PATH_LEN);
        assert!(RemotePath::parse(&relative).is_err());
        let fits = &relative[..MAX_PATH_LEN - 1];
        let p = RemotePath::parse(fits).unwrap();
        assert_eq!(p.as_str().len(), MAX_PATH_LEN);
        assert_eq!(RemotePath::parse(p.as_str()).unwrap(), p);
    }

    #[test]
    fn normalises_and_rejects() {
        assert_eq!(RemotePath::parse("a//b/").unwrap().as_str(), "/a/b");
        assert_eq!(RemotePath::parse("").unwrap().as_str(), "/");
        assert!(RemotePath::parse("/a/../b").is_err());
        assert!(RemotePath::parse("/a/./b").is_err());
        assert!(RemotePath::parse("a\0b").is_err());
        assert!(RemotePath::parse(&"x".repeat(256)).is_err());
        assert!(RemotePath::parse(&"/x".repeat(3000)).is_err());
    }

    #[test]
    fn parent_name_and_prefix() {
        let p = RemotePath::parse("/a/b/c").unwrap();
        assert_eq!(p.parent().as_str(), "/a/b");
        assert_eq!(p.name(), "c");
        assert_eq!(RemotePath::parse("/a").unwrap().parent(), RemotePath::root());
        assert!(p.starts_with(&RemotePath::parse("/a").unwrap()));
        assert!(!RemotePath::parse("/ab").unwrap().starts_with(&RemotePath::parse("/a").unwrap()));
    }
}
