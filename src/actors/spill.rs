//! An append-only spill file of JSON lines, read back in the order written: where the recorder
//! puts writes its memory buffer has no room for while the database is away.
//!
//! Plain blocking file I/O, used only from the recorder's own arbiter (never on a media path).
//! The file is emptied once everything in it has been read back; a file found at start-up (the
//! process died with writes spilled) is read from its beginning.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write as _};
use std::path::PathBuf;

pub struct SpillFile {
    path: PathBuf,
    /// Lines written and not yet read back.
    pending: usize,
    /// Where the next unread line starts.
    read_offset: u64,
}

impl SpillFile {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            pending: 0,
            read_offset: 0,
        }
    }

    /// Lines waiting to be read back.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Adopts what an earlier run left in the file; returns how many lines wait.
    pub fn recover(&mut self) -> io::Result<usize> {
        self.read_offset = 0;
        self.pending = match File::open(&self.path) {
            Ok(file) => BufReader::new(file)
                .lines()
                .filter(|l| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
                .count(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(self.pending)
    }

    /// Appends one item as a JSON line.
    pub fn append<T: Serialize>(&mut self, item: &T) -> io::Result<()> {
        let mut line = serde_json::to_vec(item).map_err(io::Error::other)?;
        line.push(b'\n');
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        // One write call per line: a crash tears at most the last line.
        file.write_all(&line)?;
        self.pending += 1;
        Ok(())
    }

    /// Reads back up to `max` items, oldest first. A line that does not parse (torn by a crash)
    /// is logged and skipped. The file is emptied once nothing is left in it.
    pub fn take<T: DeserializeOwned>(&mut self, max: usize) -> io::Result<Vec<T>> {
        let mut out = Vec::new();
        if self.pending == 0 || max == 0 {
            return Ok(out);
        }
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.read_offset))?;
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        while out.len() < max && self.pending > 0 {
            line.clear();
            let read = reader.read_line(&mut line)?;
            if read == 0 {
                // The count said more; the file says no: trust the file.
                self.pending = 0;
                break;
            }
            self.read_offset += read as u64;
            if line.trim().is_empty() {
                continue;
            }
            self.pending -= 1;
            match serde_json::from_str(line.trim_end()) {
                Ok(item) => out.push(item),
                Err(e) => tracing::error!(error = %e, "spill file: unreadable line skipped"),
            }
        }
        if self.pending == 0 {
            OpenOptions::new()
                .write(true)
                .open(&self.path)?
                .set_len(0)?;
            self.read_offset = 0;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path() -> PathBuf {
        std::env::temp_dir()
            .join(format!("iace-spill-test-{}", uuid::Uuid::new_v4().simple()))
            .join("spill.jsonl")
    }

    #[test]
    fn items_come_back_in_the_order_written_and_the_file_empties() {
        let path = temp_path();
        let mut spill = SpillFile::new(path.clone());
        for n in 0..5 {
            spill.append(&n).unwrap();
        }
        assert_eq!(spill.pending(), 5);
        assert_eq!(spill.take::<i32>(2).unwrap(), vec![0, 1]);
        // Appends while reading back still land after what is there.
        spill.append(&5).unwrap();
        assert_eq!(spill.take::<i32>(10).unwrap(), vec![2, 3, 4, 5]);
        assert_eq!(spill.pending(), 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_file_left_by_an_earlier_run_is_replayed_and_torn_lines_skipped() {
        let path = temp_path();
        let mut first = SpillFile::new(path.clone());
        first.append(&"a").unwrap();
        first.append(&"b").unwrap();
        drop(first);
        // A crash mid-write leaves half a line.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"\"c").unwrap();
        let mut second = SpillFile::new(path.clone());
        assert_eq!(second.recover().unwrap(), 3);
        assert_eq!(second.take::<String>(10).unwrap(), vec!["a", "b"]);
        assert_eq!(second.pending(), 0);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
