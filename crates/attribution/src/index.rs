//! The span index: the token stream of one Datanet version, its suffix array, the row →
//! contribution map and unigram counts, in one memory-mapped file.
//!
//! ```text
//! offset  size          field (all integers little-endian)
//! 0       8             magic "OLSPAN\0\0"
//! 8       4             format version (u32) = 1
//! 12      4             pointer width p in bytes (u32): 4 (n < 2^32) or 5
//! 16      8             n: stream length in tokens, separators included (u64)
//! 24      8             d: number of documents (rows) (u64)
//! 32      4             v: vocabulary size (u32), < 65,535
//! 36      4             reserved (0)
//! 40      8             Datanet id (u64)
//! 48      8             Datanet version (u64)
//! 56      32            tokenizer hash (keccak-256 of tokenizer.json bytes, or zero)
//! 88      8             offset of the token stream
//! 96      8             offset of the suffix array
//! 104     8             offset of the document table
//! 112     8             offset of the unigram table
//! 120     8             number of real (non-separator) tokens (u64)
//! 128     2·n           token stream: u16 per token, stored as id + 1; 0 ends each document
//!         pad to 8
//!                       (an empty row has no tokens and no separator)
//!         p·n           suffix array: positions in the stream, p bytes each, in suffix order
//!                       (generalized: separators compare as distinct and smallest)
//!         pad to 8
//!         16·d          document table: (start position u64, contribution id u64), in stream
//!                       order; a contribution's rows are contiguous and in row order, so the
//!                       row number is the document index minus the contribution's first one
//!         8·(v+1)       unigram counts (u64), indexed by stored token (0 = separators)
//! ```
//!
//! About 6 bytes per token plus 16 per row: 2 for the token, 4 for the pointer.

use alloy_primitives::B256;
use memmap2::Mmap;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// File magic.
pub const MAGIC: [u8; 8] = *b"OLSPAN\0\0";
/// Current format version.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 128;
/// Largest vocabulary the u16 stream can hold (ids are stored + 1, 0 is the separator).
pub const MAX_VOCAB: u32 = 65_535;

/// Errors opening or building an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a span index of a version this build reads.
    #[error("{path}: not a span index ({reason})")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A token id does not fit the u16 stream.
    #[error(
        "token id {token} is outside the vocabulary of {vocab} (the span index holds ids < 65,535)"
    )]
    TokenOutOfRange {
        /// The id.
        token: u32,
        /// The vocabulary size.
        vocab: u32,
    },
    /// The corpus is larger than this build's suffix array construction takes.
    #[error("corpus of {0} tokens is too large (limit 2^31 - 1)")]
    TooLarge(u64),
    /// Suffix array construction failed.
    #[error("suffix array construction failed: {0}")]
    Sais(String),
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an index is of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexMeta {
    /// Datanet id.
    pub datanet: u64,
    /// Datanet version.
    pub version: u64,
    /// Vocabulary size of the tokenizer.
    pub vocab: u32,
    /// keccak-256 of `tokenizer.json` (zero when unknown).
    pub tokenizer_hash: B256,
}

/// One document (a row of a contribution) handed to [`build`].
#[derive(Clone, Debug)]
pub struct Document {
    /// On-chain contribution id.
    pub contribution: u64,
    /// Token ids.
    pub tokens: Vec<u32>,
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Builds the index of `docs` into `path` (written to a temporary file, then renamed).
/// Documents must come grouped by contribution in row order. `progress` is called with the
/// stage name and a fraction done.
pub fn build(
    path: &Path,
    meta: &IndexMeta,
    docs: &[Document],
    mut progress: impl FnMut(&str, f64),
) -> Result<(), IndexError> {
    if meta.vocab > MAX_VOCAB {
        return Err(IndexError::TokenOutOfRange {
            token: meta.vocab,
            vocab: MAX_VOCAB,
        });
    }
    let total: usize = docs.iter().map(|d| d.tokens.len() + 1).sum();
    // libsais needs a non-empty text; an index of nothing but empty rows has none.
    if total as u64 >= i32::MAX as u64 {
        return Err(IndexError::TooLarge(total as u64));
    }
    let mut stream: Vec<u16> = Vec::with_capacity(total);
    let mut table: Vec<(u64, u64)> = Vec::with_capacity(docs.len());
    let mut unigram = vec![0u64; meta.vocab as usize + 1];
    for (i, d) in docs.iter().enumerate() {
        table.push((stream.len() as u64, d.contribution));
        for &t in &d.tokens {
            if t >= meta.vocab {
                return Err(IndexError::TokenOutOfRange {
                    token: t,
                    vocab: meta.vocab,
                });
            }
            let s = (t + 1) as u16;
            unigram[s as usize] += 1;
            stream.push(s);
        }
        // An empty row gets no separator (libsais refuses empty texts); it keeps its table
        // entry, with the same start as the next row, so row numbers stay right.
        if !d.tokens.is_empty() {
            stream.push(0);
            unigram[0] += 1;
        }
        if i % 4096 == 0 {
            progress("tokens", i as f64 / docs.len().max(1) as f64);
        }
    }
    progress("suffix array", 0.0);
    let sa: Vec<i32> = if stream.is_empty() {
        Vec::new()
    } else {
        libsais::SuffixArrayConstruction::for_text(&stream[..])
            .in_owned_buffer32()
            .single_threaded()
            .generalized_suffix_array()
            .run()
            .map_err(|e| IndexError::Sais(format!("{e:?}")))?
            .into_vec()
    };
    progress("suffix array", 1.0);
    let n = stream.len();
    let ptr = 4usize;
    let tokens_off = HEADER_LEN;
    let sa_off = pad8(tokens_off + 2 * n);
    let docs_off = pad8(sa_off + ptr * n);
    let uni_off = docs_off + 16 * table.len();
    let real = (n as u64) - unigram[0];

    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&(ptr as u32).to_le_bytes());
    h.extend_from_slice(&(n as u64).to_le_bytes());
    h.extend_from_slice(&(table.len() as u64).to_le_bytes());
    h.extend_from_slice(&meta.vocab.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&meta.datanet.to_le_bytes());
    h.extend_from_slice(&meta.version.to_le_bytes());
    h.extend_from_slice(meta.tokenizer_hash.as_slice());
    for off in [tokens_off, sa_off, docs_off, uni_off] {
        h.extend_from_slice(&(off as u64).to_le_bytes());
    }
    h.extend_from_slice(&real.to_le_bytes());
    debug_assert_eq!(h.len(), HEADER_LEN);
    let e = io_err(&tmp);
    w.write_all(&h).map_err(&e)?;
    for t in &stream {
        w.write_all(&t.to_le_bytes()).map_err(&e)?;
    }
    w.write_all(&vec![0u8; sa_off - (tokens_off + 2 * n)])
        .map_err(&e)?;
    for (i, &p) in sa.iter().enumerate() {
        w.write_all(&(p as u32).to_le_bytes()).map_err(&e)?;
        if i % (1 << 22) == 0 {
            progress("write", i as f64 / n.max(1) as f64);
        }
    }
    w.write_all(&vec![0u8; docs_off - (sa_off + ptr * n)])
        .map_err(&e)?;
    for (start, c) in &table {
        w.write_all(&start.to_le_bytes()).map_err(&e)?;
        w.write_all(&c.to_le_bytes()).map_err(&e)?;
    }
    for c in &unigram {
        w.write_all(&c.to_le_bytes()).map_err(&e)?;
    }
    let file = w.into_inner().map_err(|x| e(x.into_error()))?;
    file.sync_all().map_err(&e)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    progress("write", 1.0);
    Ok(())
}

/// A memory-mapped span index.
#[derive(Debug)]
pub struct SpanIndex {
    map: Mmap,
    path: PathBuf,
    meta: IndexMeta,
    ptr: usize,
    n: usize,
    d: usize,
    real: u64,
    tokens_off: usize,
    sa_off: usize,
    docs_off: usize,
    uni_off: usize,
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

impl SpanIndex {
    /// Maps `path` and checks its header and section bounds.
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let file = std::fs::File::open(path).map_err(io_err(path))?;
        // SAFETY: index files are written once (temp file + rename) and never modified in
        // place; the map is read-only.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(io_err(path))?;
        let bad = |reason: String| IndexError::Format {
            path: path.to_path_buf(),
            reason,
        };
        if map.len() < HEADER_LEN || map[..8] != MAGIC {
            return Err(bad("bad magic".into()));
        }
        let version = le_u32(&map, 8);
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            )));
        }
        let ptr = le_u32(&map, 12) as usize;
        if ptr != 4 && ptr != 5 {
            return Err(bad(format!("pointer width {ptr}")));
        }
        let n = le_u64(&map, 16) as usize;
        let d = le_u64(&map, 24) as usize;
        let vocab = le_u32(&map, 32);
        let meta = IndexMeta {
            datanet: le_u64(&map, 40),
            version: le_u64(&map, 48),
            vocab,
            tokenizer_hash: B256::from_slice(&map[56..88]),
        };
        let offs: Vec<usize> = (0..4).map(|i| le_u64(&map, 88 + 8 * i) as usize).collect();
        let real = le_u64(&map, 120);
        let (tokens_off, sa_off, docs_off, uni_off) = (offs[0], offs[1], offs[2], offs[3]);
        let fits = n
            .checked_mul(2)
            .and_then(|x| x.checked_add(tokens_off))
            .is_some_and(|e| e <= sa_off)
            && n.checked_mul(ptr)
                .and_then(|x| x.checked_add(sa_off))
                .is_some_and(|e| e <= docs_off)
            && d.checked_mul(16)
                .and_then(|x| x.checked_add(docs_off))
                .is_some_and(|e| e <= uni_off)
            && (vocab as usize + 1)
                .checked_mul(8)
                .and_then(|x| x.checked_add(uni_off))
                .is_some_and(|e| e <= map.len())
            && tokens_off >= HEADER_LEN
            && vocab <= MAX_VOCAB;
        if !fits {
            return Err(bad("sections out of bounds (truncated file?)".into()));
        }
        Ok(Self {
            map,
            path: path.to_path_buf(),
            meta,
            ptr,
            n,
            d,
            real,
            tokens_off,
            sa_off,
            docs_off,
            uni_off,
        })
    }

    /// What the index is of.
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stream length (tokens + one separator per document).
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the index holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Number of real tokens.
    pub fn token_count(&self) -> u64 {
        self.real
    }

    /// Number of documents (rows).
    pub fn doc_count(&self) -> usize {
        self.d
    }

    /// File size in bytes.
    pub fn file_size(&self) -> usize {
        self.map.len()
    }

    /// Stored token at stream position `i` (id + 1; 0 for a separator or past the end).
    #[inline]
    pub fn stored(&self, i: usize) -> u16 {
        if i >= self.n {
            return 0;
        }
        let at = self.tokens_off + 2 * i;
        u16::from_le_bytes([self.map[at], self.map[at + 1]])
    }

    /// Suffix array entry `k`.
    #[inline]
    pub fn sa(&self, k: usize) -> usize {
        let at = self.sa_off + self.ptr * k;
        let b = &self.map[at..at + self.ptr];
        let mut x = [0u8; 8];
        x[..self.ptr].copy_from_slice(b);
        u64::from_le_bytes(x) as usize
    }

    /// Document `j`: (start position, contribution id).
    pub fn doc(&self, j: usize) -> (u64, u64) {
        let at = self.docs_off + 16 * j;
        (le_u64(&self.map, at), le_u64(&self.map, at + 8))
    }

    /// The document holding stream position `pos`.
    pub fn doc_of(&self, pos: usize) -> usize {
        // Largest j with start(j) <= pos.
        let (mut lo, mut hi) = (0usize, self.d);
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            if self.doc(mid).0 as usize <= pos {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Row number of document `j` within its contribution.
    pub fn row_of(&self, j: usize) -> u64 {
        let c = self.doc(j).1;
        let mut k = j;
        while k > 0 && self.doc(k - 1).1 == c {
            k -= 1;
        }
        (j - k) as u64
    }

    /// Unigram count of token id `t` (0 for ids outside the vocabulary).
    pub fn unigram(&self, t: u32) -> u64 {
        if t >= self.meta.vocab {
            return 0;
        }
        le_u64(&self.map, self.uni_off + 8 * (t as usize + 1))
    }

    /// Narrows `range` (suffixes sharing the first `depth` tokens) to those whose token at
    /// `depth` is `stored`.
    fn narrow(&self, range: Range<usize>, depth: usize, stored: u16) -> Range<usize> {
        let key = |k: usize| self.stored(self.sa(k) + depth);
        // Separators inside a suffix end the match: a 0 at `depth` sorts first.
        let (mut lo, mut hi) = (range.start, range.end);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if key(mid) < stored {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let start = lo;
        hi = range.end;
        while lo < hi {
            let mid = (lo + hi) / 2;
            if key(mid) <= stored {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        start..lo
    }

    /// The suffix-array range of suffixes starting with `pattern` (token ids).
    pub fn find(&self, pattern: &[u32]) -> Range<usize> {
        let mut r = 0..self.n;
        for (depth, &t) in pattern.iter().enumerate() {
            if t >= self.meta.vocab {
                return 0..0;
            }
            r = self.narrow(r, depth, (t + 1) as u16);
            if r.is_empty() {
                return 0..0;
            }
        }
        r
    }

    /// Number of occurrences of `pattern`.
    pub fn count(&self, pattern: &[u32]) -> usize {
        self.find(pattern).len()
    }

    /// The longest prefix of `query` that occurs in the corpus (never across a document
    /// boundary): its length and suffix-array range. `at_least` is a length known to occur
    /// (e.g. the previous position's match minus one), which skips re-checking it token by
    /// token.
    pub fn longest_prefix(&self, query: &[u32], at_least: usize) -> (usize, Range<usize>) {
        let known = at_least.min(query.len());
        let mut r = self.find(&query[..known]);
        if r.is_empty() {
            // `at_least` was wrong: start from scratch.
            r = 0..self.n;
            return self.extend(query, 0, r);
        }
        self.extend(query, known, r)
    }

    fn extend(
        &self,
        query: &[u32],
        mut depth: usize,
        mut r: Range<usize>,
    ) -> (usize, Range<usize>) {
        while depth < query.len() {
            let t = query[depth];
            if t >= self.meta.vocab {
                break;
            }
            let next = self.narrow(r.clone(), depth, (t + 1) as u16);
            if next.is_empty() {
                break;
            }
            r = next;
            depth += 1;
        }
        if depth == 0 {
            return (0, 0..0);
        }
        (depth, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(vocab: u32) -> IndexMeta {
        IndexMeta {
            datanet: 3,
            version: 1,
            vocab,
            tokenizer_hash: B256::repeat_byte(9),
        }
    }

    #[test]
    fn build_open_find() -> Result<(), IndexError> {
        let dir = tempfile::tempdir().map_err(io_err(Path::new("tmp")))?;
        let p = dir.path().join("x.olspan");
        let docs = vec![
            Document {
                contribution: 10,
                tokens: vec![1, 2, 3, 4],
            },
            Document {
                contribution: 10,
                tokens: vec![2, 3, 5],
            },
            Document {
                contribution: 11,
                tokens: vec![],
            },
            Document {
                contribution: 11,
                tokens: vec![3, 4, 1, 2],
            },
        ];
        build(&p, &meta(8), &docs, |_, _| {})?;
        let ix = SpanIndex::open(&p)?;
        assert_eq!(ix.meta(), &meta(8));
        assert_eq!(ix.len(), 14);
        assert_eq!(ix.token_count(), 11);
        assert_eq!(ix.doc_count(), 4);
        assert_eq!(ix.count(&[2, 3]), 2);
        assert_eq!(ix.count(&[3, 4]), 2);
        assert_eq!(ix.count(&[4, 2]), 0, "no match across a document boundary");
        assert_eq!(ix.count(&[1, 2, 3, 4]), 1);
        assert_eq!(ix.unigram(3), 3);
        assert_eq!(ix.row_of(1), 1);
        assert_eq!(ix.doc(3).1, 11);
        assert_eq!(ix.row_of(3), 1, "the empty row keeps its number");
        let (_, r) = ix.longest_prefix(&[3, 4, 1], 0);
        assert_eq!(ix.doc_of(ix.sa(r.start)), 3);
        let (len, r) = ix.longest_prefix(&[2, 3, 4, 7], 0);
        assert_eq!(len, 3);
        assert_eq!(r.len(), 1);
        assert_eq!(ix.doc_of(ix.sa(r.start)), 0);
        // Truncated and foreign files are refused.
        let bytes = std::fs::read(&p).map_err(io_err(&p))?;
        std::fs::write(&p, &bytes[..bytes.len() - 9]).map_err(io_err(&p))?;
        assert!(matches!(
            SpanIndex::open(&p),
            Err(IndexError::Format { .. })
        ));
        std::fs::write(&p, b"hello").map_err(io_err(&p))?;
        assert!(matches!(
            SpanIndex::open(&p),
            Err(IndexError::Format { .. })
        ));
        Ok(())
    }

    #[test]
    fn out_of_vocab_is_an_error() {
        let dir = tempfile::tempdir().ok();
        let p = dir.as_ref().map(|d| d.path().join("y")).unwrap_or_default();
        let docs = vec![Document {
            contribution: 1,
            tokens: vec![9],
        }];
        assert!(matches!(
            build(&p, &meta(8), &docs, |_, _| {}),
            Err(IndexError::TokenOutOfRange { token: 9, .. })
        ));
    }
}
