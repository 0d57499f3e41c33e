//! Used nonces of signed requests, remembered until their signature expires.
//!
//! A signed request carries `(signer, nonce, expiry)` and is refused once `expiry` has passed,
//! so a nonce only has to be remembered until then: the store forgets it afterwards and stays
//! as large as the requests of the last validity window (at most a day), not of all time. It
//! is shared by the Datanet service, the training jobs service and attribution's API keys.
//!
//! On disk, an append-only log (one line per used nonce, appended and `fdatasync`ed before the
//! request is answered, so a restart refuses every nonce it ever accepted while unexpired):
//!
//! ```text
//! openledger-nonces 1                     header: format version
//! <signer 0x…> <nonce decimal> <expiry>   one line per nonce (expiry: unix seconds)
//! ```
//!
//! Opening replays the log and rewrites it with the unexpired lines only (temp file, fsync,
//! rename); a torn last line left by a crash is dropped (its request was never answered). While
//! running, the log is rewritten the same way whenever it holds more than twice the live
//! nonces plus [`COMPACT_SLACK`] lines, so its size is bounded by the live nonces too and
//! each request costs one appended line (amortised O(1)).

use alloy_primitives::{Address, U256};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Log format version (the header line).
pub const NONCE_LOG_VERSION: u32 = 1;

/// Lines the log may hold beyond twice the live nonces before it is rewritten.
pub const COMPACT_SLACK: usize = 1024;

const HEADER: &str = "openledger-nonces";

/// Errors of the nonce log.
#[derive(Debug, thiserror::Error)]
pub enum NonceError {
    /// Disk I/O.
    #[error("nonce log {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A line before the last is not a nonce record.
    #[error("nonce log {path} is corrupt at line {line}: {reason}")]
    Corrupt {
        /// File.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

struct State {
    live: HashMap<(Address, U256), u64>,
    /// [`COMPACT_SLACK`] (smaller in tests).
    slack: usize,
    log: std::fs::File,
    /// Records in the log file (header excluded).
    lines: usize,
    /// Rewrite the log when `lines` reaches this.
    threshold: usize,
}

/// The used nonces of one service (see the module docs).
pub struct NonceStore {
    path: PathBuf,
    state: Mutex<State>,
}

impl std::fmt::Debug for NonceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceStore")
            .field("path", &self.path)
            .finish()
    }
}

fn parse_line(line: &str) -> Result<(Address, U256, u64), String> {
    let mut parts = line.split(' ');
    let (Some(s), Some(n), Some(e), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("expected `signer nonce expiry`".into());
    };
    Ok((
        s.parse().map_err(|e| format!("signer: {e}"))?,
        n.parse().map_err(|e| format!("nonce: {e}"))?,
        e.parse().map_err(|e| format!("expiry: {e}"))?,
    ))
}

impl NonceStore {
    /// Opens (or creates) the log at `path`, forgetting nonces that expired before `now`.
    pub fn open(path: impl Into<PathBuf>, now: u64) -> Result<Self, NonceError> {
        Self::open_with_slack(path, now, COMPACT_SLACK)
    }

    fn open_with_slack(
        path: impl Into<PathBuf>,
        now: u64,
        slack: usize,
    ) -> Result<Self, NonceError> {
        let path = path.into();
        let io = |source| NonceError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = match std::fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let mut live = HashMap::new();
        let complete = text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let corrupt = |reason: String| NonceError::Corrupt {
                path: path.display().to_string(),
                line: i + 1,
                reason,
            };
            if i == 0 {
                match line.split_once(' ') {
                    Some((HEADER, v)) if v == NONCE_LOG_VERSION.to_string() => continue,
                    _ => {
                        return Err(corrupt(format!(
                            "not a version {NONCE_LOG_VERSION} nonce log"
                        )));
                    }
                }
            }
            match parse_line(line) {
                Ok((s, n, e)) => {
                    if e >= now {
                        live.insert((s, n), e);
                    }
                }
                // The last line of a log cut off by a crash.
                Err(_) if i + 1 == lines.len() && !complete => {}
                Err(reason) => return Err(corrupt(reason)),
            }
        }
        let log = rewrite(&path, &live).map_err(io)?;
        let n = live.len();
        Ok(Self {
            path,
            state: Mutex::new(State {
                live,
                slack,
                log,
                lines: n,
                threshold: threshold(n, slack),
            }),
        })
    }

    /// Records that `signer` used `nonce` in a request valid until `expiry`; `false` if that
    /// nonce is already recorded and unexpired (a replay). Durable before it returns.
    pub fn use_nonce(
        &self,
        signer: Address,
        nonce: U256,
        expiry: u64,
        now: u64,
    ) -> Result<bool, NonceError> {
        let io = |source| NonceError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut st = self.state.lock();
        if st.live.get(&(signer, nonce)).is_some_and(|e| *e >= now) {
            return Ok(false);
        }
        st.log
            .write_all(format!("{signer} {nonce} {expiry}\n").as_bytes())
            .and_then(|()| st.log.sync_data())
            .map_err(io)?;
        st.live.insert((signer, nonce), expiry);
        st.lines += 1;
        if st.lines >= st.threshold {
            st.live.retain(|_, e| *e >= now);
            st.log = rewrite(&self.path, &st.live).map_err(io)?;
            st.lines = st.live.len();
            st.threshold = threshold(st.lines, st.slack);
        }
        Ok(true)
    }

    /// Nonces held in memory (the live ones, plus expired ones not yet dropped: at most the
    /// log's rewrite threshold).
    pub fn len(&self) -> usize {
        self.state.lock().live.len()
    }

    /// Whether no nonce is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nonce records in the log file now.
    pub fn log_records(&self) -> usize {
        self.state.lock().lines
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn threshold(live: usize, slack: usize) -> usize {
    live.saturating_mul(2).saturating_add(slack)
}

/// Writes `live` as a fresh log (temp file, fsync, rename) and opens it for appending.
fn rewrite(path: &Path, live: &HashMap<(Address, U256), u64>) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut out = String::with_capacity(32 + live.len() * 96);
        out.push_str(&format!("{HEADER} {NONCE_LOG_VERSION}\n"));
        for ((s, n), e) in live {
            out.push_str(&format!("{s} {n} {e}\n"));
        }
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(out.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    #[test]
    fn a_nonce_is_refused_until_it_expires_also_after_a_restart()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("nonces.log");
        let a = Address::with_last_byte(1);
        let s = NonceStore::open(&path, T0)?;
        assert!(s.use_nonce(a, U256::from(7), T0 + 60, T0)?);
        assert!(!s.use_nonce(a, U256::from(7), T0 + 60, T0 + 1)?);
        assert!(s.use_nonce(Address::with_last_byte(2), U256::from(7), T0 + 60, T0)?);
        assert!(s.use_nonce(a, U256::from(8), T0 + 5, T0)?);
        drop(s);
        let s = NonceStore::open(&path, T0 + 10)?;
        // Still valid: refused after the restart; expired: forgotten (and refused as expired
        // by the signature check anyway).
        assert!(!s.use_nonce(a, U256::from(7), T0 + 60, T0 + 10)?);
        assert_eq!(s.len(), 2);
        assert!(s.use_nonce(a, U256::from(8), T0 + 70, T0 + 10)?);
        Ok(())
    }

    #[test]
    fn the_log_stays_bounded_when_expiries_pass() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("nonces.log");
        // A slack of 16 lines (1,024 in service) so a few thousand requests rewrite it often.
        let slack = 16;
        let s = NonceStore::open_with_slack(&path, T0, slack)?;
        // 2,000 requests, one per second, each signed for 10 s: at most 11 are live at once.
        let mut peak_records = 0;
        let mut peak_len = 0;
        for i in 0..2_000u64 {
            let now = T0 + i;
            let signer = Address::with_last_byte((i % 7) as u8);
            assert!(s.use_nonce(signer, U256::from(i), now + 10, now)?);
            peak_records = peak_records.max(s.log_records());
            peak_len = peak_len.max(s.len());
        }
        let bound = 2 * 11 + slack;
        assert!(
            peak_records <= bound,
            "the log reached {peak_records} records"
        );
        assert!(peak_len <= bound, "memory reached {peak_len} nonces");
        let lines = std::fs::read_to_string(&path)?.lines().count();
        assert!(lines <= bound + 1, "the file has {lines} lines");
        // A restart after every expiry passed keeps nothing.
        drop(s);
        let s = NonceStore::open(&path, T0 + 3_000)?;
        assert!(s.is_empty());
        assert_eq!(std::fs::read_to_string(&path)?.lines().count(), 1);
        Ok(())
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_corruption_is_reported()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("nonces.log");
        let a = Address::with_last_byte(1);
        let s = NonceStore::open(&path, T0)?;
        assert!(s.use_nonce(a, U256::from(1), T0 + 60, T0)?);
        drop(s);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
        f.write_all(format!("{a} 2 18000").as_bytes())?;
        drop(f);
        let s = NonceStore::open(&path, T0)?;
        assert_eq!(s.len(), 1);
        assert!(!s.use_nonce(a, U256::from(1), T0 + 60, T0)?);
        drop(s);
        let text = std::fs::read_to_string(&path)?;
        std::fs::write(&path, format!("{text}garbage\n{a} 3 {}\n", T0 + 60))?;
        assert!(matches!(
            NonceStore::open(&path, T0),
            Err(NonceError::Corrupt { line: 3, .. })
        ));
        std::fs::write(&path, "something else 1\n")?;
        assert!(matches!(
            NonceStore::open(&path, T0),
            Err(NonceError::Corrupt { line: 1, .. })
        ));
        Ok(())
    }
}
