//! Inode numbers for remote paths. The root is 1; numbers are never reused while mounted.

use std::collections::HashMap;

use swarmfs_proto::RemotePath;

pub const ROOT: u64 = 1;

pub struct Inodes {
    paths: HashMap<u64, RemotePath>,
    by_path: HashMap<RemotePath, u64>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        let mut i = Inodes { paths: HashMap::new(), by_path: HashMap::new(), next: ROOT + 1 };
        i.paths.insert(ROOT, RemotePath::root());
        i.by_path.insert(RemotePath::root(), ROOT);
        i
    }
}

impl Inodes {
    pub fn path(&self, ino: u64) -> Option<RemotePath> {
        self.paths.get(&ino).cloned()
    }

    /// The inode for `path`, assigning a new one the first time it is seen.
    pub fn ino(&mut self, path: &RemotePath) -> u64 {
        if let Some(i) = self.by_path.get(path) {
            return *i;
        }
        let i = self.next;
        self.next += 1;
        self.paths.insert(i, path.clone());
        self.by_path.insert(path.clone(), i);
        i
    }

    /// Forgets `path` (and everything below it); returns the inodes that were dropped.
    pub fn remove(&mut self, path: &RemotePath) -> Vec<u64> {
        let gone: Vec<RemotePath> = self.by_path.keys().filter(|p| p.starts_with(path)).cloned().collect();
        gone.iter()
            .filter_map(|p| {
                let i = self.by_path.remove(p)?;
                self.paths.remove(&i);
                Some(i)
            })
            .collect()
    }

    /// Moves `from` (and everything below it) to `to`, keeping inode numbers, so open
    /// files follow a rename. Returns the inodes of whatever `to` replaced.
    pub fn rename(&mut self, from: &RemotePath, to: &RemotePath) -> Vec<u64> {
        let replaced = self.remove(to);
        let moved: Vec<(RemotePath, u64)> =
            self.by_path.iter().filter(|(p, _)| p.starts_with(from)).map(|(p, i)| (p.clone(), *i)).collect();
        for (old, i) in moved {
            self.by_path.remove(&old);
            let suffix = &old.as_str()[from.as_str().len()..];
            let Ok(new) = RemotePath::parse(&format!("{}{}", to.as_str(), suffix)) else { continue };
            self.paths.insert(i, new.clone());
            self.by_path.insert(new, i);
        }
        replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RemotePath {
        RemotePath::parse(s).unwrap()
    }

    #[test]
    fn rename_moves_descendants_and_keeps_numbers() {
        let mut i = Inodes::default();
        let a = i.ino(&p("/a"));
        let f = i.ino(&p("/a/f"));
        let g = i.ino(&p("/g"));
        let ab = i.ino(&p("/ab"));
        assert_eq!(i.rename(&p("/a"), &p("/g")), vec![g]);
        assert_eq!(i.path(a), Some(p("/g")));
        assert_eq!(i.path(f), Some(p("/g/f")));
        assert_eq!(i.path(ab), Some(p("/ab")), "a sibling sharing a prefix is untouched");
        assert_eq!(i.path(g), None);
        assert_eq!(i.remove(&p("/g")).len(), 2);
        assert_eq!(i.path(f), None);
    }
}
