//! What a snapshot of a guest costs. The supermachine runtime's snapshot keeps only the non-zero
//! 4 KiB pages of guest RAM (its `page_is_zero`), so every page the kernel, busybox, init and
//! agent leave non-zero at the snapshot point is paid for on disk and on every restore; a store
//! that deduplicates keeps each distinct page once.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

/// The page size the runtime's snapshot works in.
pub const PAGE: usize = 4096;

/// Page counts of one RAM image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// 4 KiB pages of RAM.
    pub pages: usize,
    /// Pages with any non-zero byte: what the runtime's snapshot stores.
    pub nonzero: usize,
    /// Distinct contents among the non-zero pages: what a deduplicating store keeps.
    pub distinct: usize,
}

fn is_zero(page: &[u8]) -> bool {
    page.iter().all(|&b| b == 0)
}

/// Counts the pages of `ram` (guest RAM from its first byte).
pub fn measure(ram: &[u8]) -> Footprint {
    let mut seen = HashSet::new();
    let mut nonzero = 0;
    for page in ram.chunks(PAGE) {
        if is_zero(page) {
            continue;
        }
        nonzero += 1;
        // Two differently seeded 64-bit hashes: a collision would need both to collide.
        let mut a = DefaultHasher::new();
        page.hash(&mut a);
        let mut b = DefaultHasher::new();
        (0xa5u8, page).hash(&mut b);
        seen.insert((a.finish(), b.finish()));
    }
    Footprint { pages: ram.len().div_ceil(PAGE), nonzero, distinct: seen.len() }
}

/// Who holds a page, from the guest's `/proc/kpageflags` (Documentation/admin-guide/mm/pagemap.rst).
pub fn owner(flags: u64) -> &'static str {
    let bit = |n: u32| flags & (1 << n) != 0;
    if bit(32) {
        "reserved (kernel image, early allocations)"
    } else if bit(10) {
        "free (first page of a free block)"
    } else if bit(7) {
        "slab"
    } else if bit(26) {
        "page tables"
    } else if bit(12) {
        "anonymous (process memory)"
    } else if bit(5) || bit(11) || bit(3) {
        "page cache (files)"
    } else if flags == 0 {
        "no flags (inside free blocks, vmalloc, kernel stacks, per-CPU)"
    } else {
        "other"
    }
}

/// The non-zero pages of `ram` by [`owner`], given the guest's `/proc/kpageflags` (8 bytes per
/// page frame, frame 0 at guest-physical 0) and where RAM starts; largest first.
pub fn nonzero_by_owner(ram: &[u8], ram_base: u64, kpageflags: &[u8]) -> Vec<(&'static str, usize)> {
    let first_pfn = (ram_base / PAGE as u64) as usize;
    let mut count: HashMap<&'static str, usize> = HashMap::new();
    for (i, page) in ram.chunks(PAGE).enumerate() {
        if is_zero(page) {
            continue;
        }
        let at = (first_pfn + i) * 8;
        let flags = kpageflags.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
        *count.entry(flags.map_or("beyond /proc/kpageflags", owner)).or_default() += 1;
    }
    let mut v: Vec<_> = count.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v
}

/// A run of guest-physical MiB holding non-zero pages: `(first MiB, last MiB, pages)`.
pub type MibRun = (u64, u64, usize);

/// Where the non-zero pages of each [`owner`] lie: per owner, the [`MibRun`]s that hold any.
pub fn owner_regions(ram: &[u8], ram_base: u64, kpageflags: &[u8]) -> Vec<(&'static str, Vec<MibRun>)> {
    let first_pfn = (ram_base / PAGE as u64) as usize;
    let mut per: HashMap<&'static str, Vec<MibRun>> = HashMap::new();
    for (i, page) in ram.chunks(PAGE).enumerate() {
        if is_zero(page) {
            continue;
        }
        let at = (first_pfn + i) * 8;
        let o = kpageflags
            .get(at..at + 8)
            .map_or("beyond /proc/kpageflags", |b| owner(u64::from_le_bytes(b.try_into().unwrap())));
        let mib = (ram_base + (i * PAGE) as u64) >> 20;
        let runs = per.entry(o).or_default();
        match runs.last_mut() {
            Some(r) if r.1 + 1 >= mib => {
                r.1 = mib;
                r.2 += 1;
            }
            _ => runs.push((mib, mib, 1)),
        }
    }
    let mut v: Vec<_> = per.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nonzero_and_distinct_pages() {
        let mut ram = vec![0u8; 8 * PAGE];
        ram[PAGE] = 1; // page 1
        ram[3 * PAGE + 7] = 1; // page 3, different content from page 1
        ram[5 * PAGE] = 1; // page 5, same content as page 1
        assert_eq!(measure(&ram), Footprint { pages: 8, nonzero: 3, distinct: 2 });
        let flags: Vec<u8> = (0..8u64).flat_map(|i| (if i == 1 { 1u64 << 7 } else { 0 }).to_le_bytes()).collect();
        let by = nonzero_by_owner(&ram, 0, &flags);
        assert_eq!(by, vec![("no flags (inside free blocks, vmalloc, kernel stacks, per-CPU)", 2), ("slab", 1)]);
    }
}
