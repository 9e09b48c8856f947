//! A minimal writer for the `newc` cpio format the kernel unpacks as an initramfs.

/// Builds an uncompressed newc archive in memory.
#[derive(Default)]
pub struct Archive {
    data: Vec<u8>,
    ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a folder (`path` without a leading slash, e.g. `"proc"`).
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.entry(path, S_IFDIR | mode, b"")
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, mode: u32, bytes: &[u8]) -> &mut Self {
        self.entry(path, S_IFREG | mode, bytes)
    }

    /// Adds a symbolic link `path` -> `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(path, S_IFLNK | 0o777, target.as_bytes())
    }

    /// Adds a character device node (e.g. `dev/kmsg`, 1:11).
    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.entry_dev(path, S_IFCHR | mode, b"", (major, minor))
    }

    fn entry(&mut self, path: &str, mode: u32, body: &[u8]) -> &mut Self {
        self.entry_dev(path, mode, body, (0, 0))
    }

    fn entry_dev(&mut self, path: &str, mode: u32, body: &[u8], rdev: (u32, u32)) -> &mut Self {
        self.ino += 1;
        let name = path.trim_start_matches('/');
        let fields = [self.ino, mode, 0, 0, 1, 0, body.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while self.data.len() % 4 != 0 {
            self.data.push(0);
        }
    }

    /// Appends the trailer and returns the archive bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, b"");
        self.data
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn newc_layout_is_aligned_and_terminated() {
        let mut a = super::Archive::new();
        a.dir("proc", 0o755).file("init", 0o755, b"#!/bin/sh\n").symlink("bin/sh", "busybox");
        let out = a.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
