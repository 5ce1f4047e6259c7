//! Inode numbers for remote paths. The root is 1; numbers are never reused while mounted.

use std::collections::{BTreeMap, HashMap};

use swarmfs_proto::RemotePath;

pub const ROOT: u64 = 1;

pub struct Inodes {
    paths: HashMap<u64, RemotePath>,
    /// Ordered by path, so a path and everything below it are one range (see `below`): a
    /// create, unlink or rename costs a lookup, not a scan of every path the mount has seen.
    by_path: BTreeMap<String, u64>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        let mut i = Inodes { paths: HashMap::new(), by_path: BTreeMap::new(), next: ROOT + 1 };
        i.paths.insert(ROOT, RemotePath::root());
        i.by_path.insert(RemotePath::root().as_str().to_string(), ROOT);
        i
    }
}

impl Inodes {
    pub fn path(&self, ino: u64) -> Option<RemotePath> {
        self.paths.get(&ino).cloned()
    }

    /// The inode for `path` if it has one.
    pub fn known(&self, path: &RemotePath) -> Option<u64> {
        self.by_path.get(path.as_str()).copied()
    }

    /// The inode for `path`, assigning a new one the first time it is seen.
    pub fn ino(&mut self, path: &RemotePath) -> u64 {
        if let Some(i) = self.by_path.get(path.as_str()) {
            return *i;
        }
        let i = self.next;
        self.next += 1;
        self.paths.insert(i, path.clone());
        self.by_path.insert(path.as_str().to_string(), i);
        i
    }

    /// `path` and every known path below it. Below `/a` lie the paths from `/a/` up to,
    /// not including, `/a0` ('0' follows '/'), so `/ab` is not among them.
    fn below(&self, path: &RemotePath) -> Vec<(String, u64)> {
        let mut found: Vec<(String, u64)> = Vec::new();
        if path.is_root() {
            found.extend(self.by_path.iter().map(|(p, i)| (p.clone(), *i)));
            return found;
        }
        if let Some(i) = self.by_path.get(path.as_str()) {
            found.push((path.as_str().to_string(), *i));
        }
        let (from, until) = (format!("{path}/"), format!("{path}0"));
        found.extend(self.by_path.range(from..until).map(|(p, i)| (p.clone(), *i)));
        found
    }

    /// The inodes of `path` and of every known path below it.
    pub fn within(&self, path: &RemotePath) -> Vec<u64> {
        self.below(path).into_iter().map(|(_, i)| i).collect()
    }

    /// Forgets `path` (and everything below it); returns the inodes that were dropped.
    pub fn remove(&mut self, path: &RemotePath) -> Vec<u64> {
        self.below(path)
            .into_iter()
            .map(|(p, i)| {
                self.by_path.remove(&p);
                self.paths.remove(&i);
                i
            })
            .collect()
    }

    /// Moves `from` (and everything below it) to `to`, keeping inode numbers, so open
    /// files follow a rename. Returns the inodes of whatever `to` replaced.
    pub fn rename(&mut self, from: &RemotePath, to: &RemotePath) -> Vec<u64> {
        let replaced = self.remove(to);
        for (old, i) in self.below(from) {
            self.by_path.remove(&old);
            let suffix = &old[from.as_str().len()..];
            let Ok(new) = RemotePath::parse(&format!("{}{}", to.as_str(), suffix)) else { continue };
            self.by_path.insert(new.as_str().to_string(), i);
            self.paths.insert(i, new);
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
        // Sort next to `/a`'s children ('-' and '.' come before '/', '0' after it).
        let neighbours = [i.ino(&p("/a-x")), i.ino(&p("/a.x")), i.ino(&p("/a0"))];
        assert_eq!(i.rename(&p("/a"), &p("/g")), vec![g]);
        assert_eq!(i.path(a), Some(p("/g")));
        assert_eq!(i.path(f), Some(p("/g/f")));
        assert_eq!(i.path(ab), Some(p("/ab")), "a sibling sharing a prefix is untouched");
        for (n, name) in neighbours.iter().zip(["/a-x", "/a.x", "/a0"]) {
            assert_eq!(i.path(*n), Some(p(name)), "{name} stays where it was");
        }
        assert_eq!(i.ino(&p("/g/f")), f, "the moved path finds its inode");
        assert_eq!(i.path(g), None);
        assert_eq!(i.remove(&p("/g")).len(), 2);
        assert_eq!(i.path(f), None);
    }
}
