//! The persisted trace index: beside each data file, the sorted distinct
//! `trace_key`s it holds, so a node that starts reads one small object per
//! file instead of the file's footer and key column.
//!
//! A data file `date=…/hour=…/part-….zstd.parquet` has its keys at
//! `_trace_index/date=…/hour=…/part-….zstd.parquet.keys`, relative to the
//! table root. The folder starts with `_`, so Delta's vacuum leaves it
//! alone; the compactor deletes the keys of files no longer in the table.
//! Whoever writes a data file (flush, compaction, upgrade) writes its keys
//! too; a reader that meets a file without them (written by an older
//! release, or the keys' upload failed) reads the key column and writes
//! them.
//!
//! Layout: the 8-byte magic `TLKEYS1\n`, the count as a little-endian
//! `u64`, then the keys as little-endian `i64`s in ascending order.

/// The folder of the keys, under the table root.
pub const DIR: &str = "_trace_index";
const SUFFIX: &str = ".keys";
const MAGIC: &[u8; 8] = b"TLKEYS1\n";

/// Where the keys of the data file at `data` (relative to the table root)
/// are kept.
pub fn keys_path(data: &str) -> String {
    format!("{DIR}/{data}{SUFFIX}")
}

/// The data file whose keys are at `keys` (both relative to the table
/// root), if `keys` is such a path.
pub fn data_path(keys: &str) -> Option<&str> {
    keys.strip_prefix(DIR)?
        .strip_prefix('/')?
        .strip_suffix(SUFFIX)
}

/// The sorted distinct keys of a file, collected from its rows in file order
/// (which is `trace_key` order).
#[derive(Debug, Default)]
pub struct KeysBuilder {
    keys: Vec<i64>,
    sorted: bool,
}

impl KeysBuilder {
    pub fn new() -> Self {
        Self {
            keys: Vec::new(),
            sorted: true,
        }
    }

    /// Adds the keys of some rows; cheap when they come in ascending order.
    pub fn extend(&mut self, keys: &[i64]) {
        for &key in keys {
            match self.keys.last() {
                Some(&last) if last == key => {}
                Some(&last) => {
                    self.sorted &= last < key;
                    self.keys.push(key);
                }
                None => self.keys.push(key),
            }
        }
    }

    /// The sorted distinct keys.
    pub fn finish(mut self) -> Vec<i64> {
        if !self.sorted {
            self.keys.sort_unstable();
            self.keys.dedup();
        }
        self.keys
    }
}

/// The stored form of sorted distinct keys.
pub fn encode(keys: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + keys.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for key in keys {
        out.extend_from_slice(&key.to_le_bytes());
    }
    out
}

/// The keys of a stored form; an error names what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<Vec<i64>, String> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or("not a trace keys object (bad magic)")?;
    let (count, rest) = rest.split_at_checked(8).ok_or("truncated count")?;
    let count = u64::from_le_bytes(count.try_into().expect("8 bytes"));
    if rest.len() as u64 != count.saturating_mul(8) {
        return Err(format!(
            "{count} keys announced, {} bytes of keys present",
            rest.len()
        ));
    }
    let keys: Vec<i64> = rest
        .chunks_exact(8)
        .map(|k| i64::from_le_bytes(k.try_into().expect("8 bytes")))
        .collect();
    if keys.windows(2).any(|w| w[0] >= w[1]) {
        return Err("keys not in strictly ascending order".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for keys in [vec![], vec![i64::MIN, -1, 0, 7, i64::MAX]] {
            assert_eq!(decode(&encode(&keys)).unwrap(), keys);
        }
    }

    #[test]
    fn damaged_keys_are_refused() {
        let good = encode(&[1, 2, 3]);
        assert!(decode(&good[..good.len() - 1]).is_err());
        assert!(decode(&good[..10]).is_err());
        assert!(decode(b"PAR1....").is_err());
        assert!(decode(&encode(&[3, 2])).unwrap_err().contains("order"));
        let mut more = good.clone();
        more.extend_from_slice(&4i64.to_le_bytes());
        assert!(decode(&more).is_err());
    }

    #[test]
    fn builder_keeps_distinct_keys_in_order() {
        let mut b = KeysBuilder::new();
        b.extend(&[1, 1, 2]);
        b.extend(&[2, 5, 5]);
        assert_eq!(b.finish(), vec![1, 2, 5]);
        let mut b = KeysBuilder::new();
        b.extend(&[5, 1, 5, 1]);
        assert_eq!(b.finish(), vec![1, 5]);
    }

    #[test]
    fn paths_map_both_ways() {
        let data = "date=2026-12-04/hour=09/part-x.zstd.parquet";
        let keys = keys_path(data);
        assert_eq!(
            keys,
            "_trace_index/date=2026-12-04/hour=09/part-x.zstd.parquet.keys"
        );
        assert_eq!(data_path(&keys), Some(data));
        assert_eq!(data_path(data), None);
        assert_eq!(data_path("_trace_index/x.parquet"), None);
    }
}
