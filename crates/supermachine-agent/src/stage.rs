//! The stage files of a REQUEST (`stage_files`): their data spooled in order as the first frame
//! streams in (see `jsonscan`), each written beside its target just before the exec starts.

use crate::jsonscan::{Extract, Slot};
use crate::spool::Spool;
use crate::tmpfile::{self, TmpFile};
use supermachine_agent_proto::{b64, StageFile};

/// The [`Extract`] of a REQUEST: stage files' data, spooled in order.
#[derive(Default)]
pub struct StageData {
    spool: Option<Spool>,
    /// (index in stage_files, start in the spool, length)
    ranges: Vec<(usize, u64, u64)>,
    current: Option<(usize, u64)>,
}

impl Extract for StageData {
    fn begin(&mut self, slot: Slot, _partial: &[u8]) -> Result<(), String> {
        let Slot::Stage(i) = slot else { return Ok(()) };
        if self.spool.is_none() {
            self.spool = Some(Spool::new().map_err(|e| format!("stage_files[{i}]: cannot create a spool file: {e}"))?);
        }
        self.current = Some((i, self.spool.as_ref().map_or(0, Spool::len)));
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (Some(s), Some((i, _))) = (self.spool.as_mut(), self.current) else { return Ok(()) };
        s.append(bytes).map_err(|e| format!("stage_files[{i}]: cannot spool the data: {e}"))
    }

    fn end(&mut self) -> Result<(), String> {
        if let (Some(s), Some((i, start))) = (self.spool.as_ref(), self.current.take()) {
            self.ranges.push((i, start, s.len() - start));
        }
        Ok(())
    }
}

impl StageData {
    /// Writes stage file `i` (atomically, parents created).
    pub fn write(&self, i: usize, f: &StageFile) -> Result<(), String> {
        let cannot = |e: std::io::Error| format!("stage_files[{i}]: cannot write {}: {e}", f.path);
        let range = self.ranges.iter().rev().find(|r| r.0 == i);
        match (range, &self.spool) {
            (Some(&(_, start, len)), Some(s)) => {
                let mut t = TmpFile::beside(&f.path).map_err(cannot)?;
                s.copy_to(start, len, t.file(), 0).map_err(cannot)?;
                t.grew(len);
                t.commit(f.mode).map_err(cannot)
            }
            _ => {
                let data = b64::decode(&f.data_b64).map_err(|e| format!("stage_files[{i}] {}: {e}", f.path))?;
                tmpfile::atomic_write(&f.path, &data, f.mode).map_err(cannot)
            }
        }
    }
}
