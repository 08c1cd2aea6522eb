//! Offline reading of a stopped pyro workspace's ext4 disk image (`pyro workspace disk
//! list|read|export`), and its sparse export. No VM is involved: the disk is a file, either a
//! raw image or a qcow2 overlay over a chain of backing files (see [`DiskImage`]).
//!
//! The image was written by the guest, so everything in it is treated as hostile: names, sizes,
//! symlink targets, directory structure and the superblock itself. The reader is the `ext4-view`
//! crate (safe Rust, read-only), wrapped so that none of its known failure modes can be reached:
//!
//! - the superblock is validated by us before `Ext4::load` (magic, block size <= 64 KiB, a
//!   group layout and block count that fit the file), because a huge `s_log_block_size` or
//!   block-group count makes the loader allocate gigabytes;
//! - a symlink's target is read only after its inode size was checked (<= 4096): the crate
//!   allocates the claimed size before reading, and a corrupt size aborts the process;
//! - a guest path is resolved by us one component at a time with non-following calls, so the
//!   crate never follows a symlink on its own (it would read a target of any claimed size, and
//!   could walk into a runtime-only directory);
//! - file content is read through `ext4_view::File` with a byte cap ([`MAX_READ_BYTES`], checked
//!   before the image is opened), in 1 MiB steps, never `Ext4::read`;
//! - a listing is bounded before anything is collected: a directory's claimed size before it is
//!   read ([`MAX_DIR_BYTES`], and [`MAX_TOTAL_DIR_BYTES`] per listing), entries per directory
//!   ([`MAX_DIR_ENTRIES`]) and per listing ([`MAX_ENTRIES`]) before each is kept, depth
//!   ([`MAX_DEPTH`]) and path-lookup work ([`MAX_LOOKUPS`]), because a hard-linked directory in a
//!   corrupt image makes a cycle and the crate exposes no inode numbers;
//! - a listing's directory walk verifies no metadata checksums (the guest computes valid ones for
//!   whatever it writes, so they never were a defence; see `walk` in the source): ~3x faster.
//!   Resolving the caller's path and reading a file verify every checksum the image has;
//! - every entry point runs under `catch_unwind`, so a panic in the parser becomes an error;
//! - nothing here writes to the image or runs a tool on it. The runtime-only paths
//!   ([`RUNTIME_ONLY_PATHS`]) live on the guest's tmpfs `/run`, so an image has them only if the
//!   guest put them there itself: `list` and `read` hide them anyway, and `export` copies the
//!   image byte for byte, as guest data (it never held the host's secrets: those are never on
//!   the disk).
//!
//! The format of an image is never sniffed from its bytes (a guest writes a raw disk's first
//! sector, so it could make its disk look like a qcow2 file naming any host file as backing):
//! the caller says it ([`ImageFormat`], recorded by the host when it made the disk), and a qcow2
//! image's backing files are read as the format its header records for them. How qcow2 headers
//! and chains are validated and bounded is in the `qcow2` module (source).
//!
//! `scripts/fuzz.sh` runs the `ext4_reader` fuzz target (mutated images through `list`/`read`,
//! raw and as qcow2 overlays).
//!
//! `ext4-view` types are `!Send`: they never leave the function (or worker thread) that made them.
//!
//! # How odd names are shown
//!
//! Guest names are bytes. In [`DiskEntry::path`] and [`DiskEntry::link_target`] they are shown
//! as text with this escaping (see [`escape_guest_bytes`]):
//! `\` -> `\\`, newline -> `\n`, tab -> `\t`, carriage return -> `\r`, other control characters
//! and bidirectional/line-separator format characters -> `\u{hex}`, and each byte that is not part
//! of valid UTF-8 -> `\xNN`. Everything else (spaces, quotes, `ünï`) is shown as is. Because a
//! literal backslash is always doubled the scheme is unambiguous, and a path shown by `list` can
//! be passed back to `list`/`read` as shown: a path that does not exist literally and contains a
//! backslash is looked up again after [`unescape_guest_path`].

#![deny(missing_docs)]

mod error;
mod qcow2;

pub use error::{Error, Result};
use ext4_view::{Ext4, Ext4Error, Ext4Read, Metadata};
use qcow2::{Chain, Extent, Fault, L2Cache};
pub use qcow2::{L2_CACHE_BYTES, MAX_BACKING_DEPTH, MAX_L1_ENTRIES};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Guest paths that only exist while a workspace runs (secrets, shell logs, service state). They
/// live on tmpfs in pyro, but must never be shown by `list`/`read` even if an image has them.
pub const RUNTIME_ONLY_PATHS: [&str; 3] = ["/run/pyro-secrets", "/run/pyro-shells", "/run/pyro-services"];

/// Symlink targets longer than this are not read (the crate allocates the claimed size first).
/// Linux refuses to create longer ones (PATH_MAX), so only a corrupt or forged inode has them.
const MAX_LINK_TARGET: u64 = 4096;
/// `s_log_block_size` above this (blocks over 64 KiB) is refused before loading.
const MAX_LOG_BLOCK_SIZE: u32 = 6;
/// Directory nesting below the listed path; deeper means a cycle (or an absurd tree).
pub const MAX_DEPTH: usize = 256;
/// Entries one listing may return, counted as they are found (across all walker threads).
pub const MAX_ENTRIES: usize = 200_000;
/// Entries one directory may have; more stops the listing before they are all collected.
pub const MAX_DIR_ENTRIES: usize = 100_000;
/// Size a directory inode may claim before it is read: reading costs time per claimed block,
/// and a real 100,000-entry directory of 255-byte names is ~27 MiB.
pub const MAX_DIR_BYTES: u64 = 64 << 20;
/// Directory bytes one listing may read in total (a real 200,000-entry tree needs well under
/// 100 MiB): bounds the time a corrupt image with many huge sparse directories costs.
pub const MAX_TOTAL_DIR_BYTES: u64 = 1 << 30;
/// Path components ext4-view may look up during one recursive listing. Every `read_dir` resolves
/// its path from `/`, so a cyclic tree costs depth x directories lookups; this bounds the work
/// of a corrupt image with a fan-out cycle (a real 100k-directory tree needs ~1M).
pub const MAX_LOOKUPS: u64 = 20_000_000;
/// Largest `max_bytes` one `read` accepts (the same 16 MiB as a captured exec stream): the
/// answer is built in memory and sent as one JSON string.
pub const MAX_READ_BYTES: u64 = 16 << 20;
/// `read` callers may ask for a few bytes past their limit, to finish a UTF-8 character.
const READ_SLACK_BYTES: u64 = 3;
/// Symlinks followed while resolving one guest path (as Linux).
const MAX_SYMLINK_FOLLOWS: usize = 40;
/// ext4-view refuses longer paths; a walk that reaches one reports it instead of failing oddly.
const MAX_PATH_BYTES: usize = 4096;
/// Worker threads for a recursive listing (each loads the filesystem itself: `Ext4` is `!Send`).
const MAX_WALKERS: usize = 4;
/// Bytes read from a guest file per reserve-and-read step, so memory follows the data read.
const READ_CHUNK: usize = 1 << 20;

/// How a disk image file is laid out. Always recorded by the host that made the image, never
/// guessed from its bytes (see the crate docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// The file is the disk, byte for byte.
    #[default]
    Raw,
    /// A qcow2 (v2/v3) image, possibly an overlay over a chain of raw or qcow2 backing files.
    Qcow2,
}

/// A stopped workspace's disk: the image file and its format.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiskImage {
    /// The image file (for qcow2, the top of its backing chain).
    pub path: PathBuf,
    /// How the file is laid out.
    pub format: ImageFormat,
}

impl DiskImage {
    /// The image at `path`, laid out as `format`.
    pub fn new(path: impl Into<PathBuf>, format: ImageFormat) -> Self {
        DiskImage { path: path.into(), format }
    }

    /// A raw image at `path`.
    pub fn raw(path: impl Into<PathBuf>) -> Self {
        Self::new(path, ImageFormat::Raw)
    }

    /// A qcow2 image at `path`.
    pub fn qcow2(path: impl Into<PathBuf>) -> Self {
        Self::new(path, ImageFormat::Qcow2)
    }
}

/// The bounds of one listing, each checked before what it bounds is read or stored.
/// [`list`] uses [`ListLimits::default`] (the `MAX_*` constants); a caller may pass smaller ones
/// to [`list_with_limits`] (the tests do, to reach each bound with a small image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListLimits {
    /// Directory nesting below the listed path ([`MAX_DEPTH`]).
    pub max_depth: usize,
    /// Entries in the whole listing ([`MAX_ENTRIES`]).
    pub max_entries: usize,
    /// Entries in one directory ([`MAX_DIR_ENTRIES`]).
    pub max_dir_entries: usize,
    /// Bytes one directory's inode may claim ([`MAX_DIR_BYTES`]).
    pub max_dir_bytes: u64,
    /// Directory bytes read by the whole listing ([`MAX_TOTAL_DIR_BYTES`]).
    pub max_total_dir_bytes: u64,
    /// Directory lookups the whole listing may make ([`MAX_LOOKUPS`]).
    pub max_lookups: u64,
}

impl Default for ListLimits {
    fn default() -> Self {
        ListLimits {
            max_depth: MAX_DEPTH,
            max_entries: MAX_ENTRIES,
            max_dir_entries: MAX_DIR_ENTRIES,
            max_dir_bytes: MAX_DIR_BYTES,
            max_total_dir_bytes: MAX_TOTAL_DIR_BYTES,
            max_lookups: MAX_LOOKUPS,
        }
    }
}

/// One inspectable path of a stopped workspace's disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DiskEntry {
    /// Absolute guest path, escaped as described in the module docs.
    pub path: String,
    /// `file`, `directory` or `symlink`.
    pub artifact_type: String,
    /// File size, symlink target length; 0 for directories.
    pub size_bytes: u64,
    /// Symlink target (escaped); `None` for other types, and for a target that could not be read
    /// safely (claimed longer than 4096 bytes, or corrupt).
    pub link_target: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// Lists `guest_path` (normalised, absolute) in the image: a single entry for a non-directory,
/// else its children (the whole subtree with `recursive`, never through symlinks), sorted by path.
pub fn list(image: &DiskImage, guest_path: &str, recursive: bool) -> Result<Vec<DiskEntry>> {
    list_with_limits(image, guest_path, recursive, ListLimits::default())
}

/// [`list`] with other bounds.
pub fn list_with_limits(
    disk: &DiskImage,
    guest_path: &str,
    recursive: bool,
    limits: ListLimits,
) -> Result<Vec<DiskEntry>> {
    let image = disk.path.as_path();
    guarded(image, || {
        let chain = Arc::new(Chain::open(image, disk.format)?);
        let fs = open_image(image, &chain, View::Verified)?;
        let target = locate(&fs, image, guest_path)?;
        let kind = artifact_type(&target.meta);
        if !target.meta.is_dir() {
            let Some(kind) = kind else {
                return Err(Error::UnsupportedType { path: target.shown });
            };
            let link_target = if kind == "symlink" { link_target(&fs, &target.real, &target.meta) } else { None };
            return Ok(vec![DiskEntry {
                path: target.shown,
                artifact_type: kind.to_string(),
                size_bytes: target.meta.len(),
                link_target,
            }]);
        }
        let root = Job { real: target.real, shown: target.shown, depth: 0, size: target.meta.len() };
        drop(fs);
        let mut entries = walk(image, &chain, root, recursive, limits)?;
        entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    })
}

/// Checks a caller's `max_bytes` for [`read`]: 1..=[`MAX_READ_BYTES`].
pub fn check_read_limit(max_bytes: u64) -> Result<()> {
    if max_bytes == 0 {
        return Err(Error::ZeroReadLimit);
    }
    if max_bytes > MAX_READ_BYTES {
        return Err(Error::ReadLimitTooLarge { requested: max_bytes, max: MAX_READ_BYTES });
    }
    Ok(())
}

/// Reads the first `max_bytes` of the regular file at `guest_path`; returns its full size and
/// those bytes. The cost follows `max_bytes` (and the file's block map), not the file size.
/// `max_bytes` is checked with [`check_read_limit`] (a caller may add up to 3 bytes to finish a
/// UTF-8 character) before the image is opened.
pub fn read(disk: &DiskImage, guest_path: &str, max_bytes: u64) -> Result<(u64, Vec<u8>)> {
    check_read_limit(max_bytes.saturating_sub(READ_SLACK_BYTES).max(1))?;
    if max_bytes == 0 {
        return Err(Error::ZeroReadLimit);
    }
    let image = disk.path.as_path();
    guarded(image, || {
        let chain = Arc::new(Chain::open(image, disk.format)?);
        let fs = open_image(image, &chain, View::Verified)?;
        let target = locate(&fs, image, guest_path)?;
        if !target.meta.file_type().is_regular_file() {
            return Err(Error::NotARegularFile);
        }
        // `target.real` has no symlink component and ends in a regular file, so `open` follows
        // nothing and finds the inode `locate` checked.
        let mut file = fs.open(ext4_path(&target.real)?).map_err(|e| fs_error(image, &target.shown, e))?;
        let size = file.metadata().len();
        let want = usize::try_from(size.min(max_bytes)).unwrap_or(usize::MAX);
        let mut data: Vec<u8> = Vec::new();
        while data.len() < want {
            // Grow as data arrives: a forged size or a huge max_bytes must not allocate up front.
            let step = (want - data.len()).min(READ_CHUNK);
            data.try_reserve_exact(step).map_err(|_| Error::OutOfMemory { bytes: want, path: target.shown.clone() })?;
            let start = data.len();
            data.resize(start + step, 0);
            let mut filled = start;
            while filled < start + step {
                let n =
                    file.read_bytes(&mut data[filled..start + step]).map_err(|e| fs_error(image, &target.shown, e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            data.truncate(filled);
            if filled < start + step {
                break; // the block map ended early (corrupt size): return what exists
            }
        }
        Ok((size, data))
    })
}

/// Copies the disk to `output` as a raw image, never replacing anything and never leaving a
/// partial file: the copy is made in an anonymous file (`O_TMPFILE`) in the output directory
/// and linked in only when complete (falling back to a hidden temp file renamed with
/// `RENAME_NOREPLACE` where `O_TMPFILE` is unsupported). Holes stay holes, and so do all-zero
/// 4 KiB blocks: a raw image's, and for a qcow2 image its zero clusters, what no layer of its
/// chain allocated, and those of its data. Returns the disk size.
pub fn export(disk: &DiskImage, output: &Path) -> Result<u64> {
    let image = disk.path.as_path();
    if output.symlink_metadata().is_ok() {
        return Err(already_exists(output));
    }
    let chain = guarded(image, || Chain::open(image, disk.format))?;
    let meta = chain.top_file().metadata().map_err(|e| Error::io(format!("cannot stat {}", image.display()), e))?;
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| {
        Error::io(format!("cannot create the directory for output_path {} ({})", output.display(), parent.display()), e)
    })?;
    let out = PendingOutput::create(&parent, output)?;
    let len = chain.size();
    let io_err = |e: io::Error| Error::io(format!("cannot export {} to {}", image.display(), output.display()), e);
    match disk.format {
        ImageFormat::Raw => copy_sparse(chain.top_file(), out.file(), len).map_err(io_err)?,
        ImageFormat::Qcow2 => guarded(image, || {
            copy_chain(&chain, out.file(), len).map_err(|fault| match fault {
                Fault::Io(e) => io_err(e),
                fault => fault.qcow2_error(image).unwrap_or_else(|| io_err(io::Error::other(fault.to_string()))),
            })
        })?,
    }
    // A trailing hole is not copied; the length makes it part of the file.
    out.file().set_len(len).map_err(io_err)?;
    // Like the reference (shutil.copy2): keep permission bits and modification time.
    out.file().set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(io_err)?;
    if let Ok(mtime) = meta.modified() {
        out.file().set_modified(mtime).map_err(io_err)?;
    }
    out.commit(output)?;
    Ok(len)
}

/// Shows guest bytes as text with the escaping described in the module docs.
pub fn escape_guest_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if needs_escape(c) => {
                    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Reverses [`escape_guest_bytes`]; `None` when `shown` is not a valid escaped form.
pub fn unescape_guest_path(shown: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(shown.len());
    let mut chars = shown.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next()? {
            '\\' => out.push(b'\\'),
            'n' => out.push(b'\n'),
            't' => out.push(b'\t'),
            'r' => out.push(b'\r'),
            'x' => {
                let hex: String = [chars.next()?, chars.next()?].iter().collect();
                out.push(u8::from_str_radix(&hex, 16).ok()?);
            }
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let mut hex = String::new();
                loop {
                    match chars.next()? {
                        '}' => break,
                        h if hex.len() < 6 => hex.push(h),
                        _ => return None,
                    }
                }
                let c = char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            _ => return None,
        }
    }
    Some(out)
}

fn needs_escape(c: char) -> bool {
    // Control characters, plus the format characters that reorder or break displayed lines
    // (bidi overrides/isolates/marks, line and paragraph separators): a name must not be able to
    // make its own line look like something else.
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

// ---------------------------------------------------------------------------------------------
// Opening an image
// ---------------------------------------------------------------------------------------------

/// Runs `f`, turning a panic inside the ext4 parser into an error instead of unwinding into the
/// engine (the image is hostile; the crate has `unwrap`s on paths fuzzing has not reached).
fn guarded<T>(image: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(Error::ReaderFailed { image: image.to_path_buf() }))
}

/// What `ext4-view` reads through: the disk of a [`Chain`] (for a raw image, one file) with
/// positioned reads (`pread`: no shared file offset) and this reader's own L2 table cache.
struct ImageReader {
    chain: Arc<Chain>,
    cache: L2Cache,
    view: View,
}

/// How an image is opened.
#[derive(Clone, Copy)]
enum View {
    /// Every metadata checksum the image has (CRC32C of superblock, group descriptors, inodes,
    /// directory and extent blocks) is verified: for resolving the caller's path and reading files.
    Verified,
    /// For the directory walk of a listing (see [`walk`] for why this is sound): the reader is
    /// shown a superblock without `metadata_csum`, so it verifies no checksums.
    Walk,
}

impl Ext4Read for ImageReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let read = self.chain.read_exact_at(&mut self.cache, dst, start_byte).map_err(|e| Box::new(e) as Box<_>);
        match &self.view {
            View::Verified => read,
            View::Walk => {
                read?;
                // The byte is patched wherever a read covers it, so all reads agree.
                if let Some(i) = METADATA_CSUM_BYTE.checked_sub(start_byte).and_then(|i| usize::try_from(i).ok()) {
                    if let Some(b) = dst.get_mut(i) {
                        *b &= !METADATA_CSUM_BIT;
                    }
                }
                Ok(())
            }
        }
    }
}

/// `s_feature_ro_compat` is the little-endian u32 at superblock offset 0x64; `metadata_csum` is
/// its bit 0x400, i.e. bit 0x04 of its second byte.
const METADATA_CSUM_BYTE: u64 = 1024 + 0x64 + 1;
const METADATA_CSUM_BIT: u8 = 0x04;

struct SuperblockFacts {
    needs_recovery: bool,
}

fn not_ext4(image: &Path, why: impl std::fmt::Display) -> Error {
    Error::NotExt4 { image: image.to_path_buf(), reason: why.to_string() }
}

/// Validates what `Ext4::load` would otherwise trust with allocations.
fn check_superblock(image: &Path, chain: &Chain) -> Result<SuperblockFacts> {
    let file_len = chain.size();
    let mut sb = [0u8; 1024];
    chain.read_exact_at(&mut L2Cache::new(), &mut sb, 1024).map_err(|fault| {
        fault.qcow2_error(image).unwrap_or_else(|| not_ext4(image, "too small to hold an ext4 superblock"))
    })?;
    let u16_at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    if u16_at(0x38) != 0xEF53 {
        return Err(not_ext4(image, "no ext4 superblock magic"));
    }
    let log_block_size = u32_at(0x18);
    if log_block_size > MAX_LOG_BLOCK_SIZE {
        return Err(not_ext4(
            image,
            format!("s_log_block_size {log_block_size} is above {MAX_LOG_BLOCK_SIZE} (64 KiB blocks)"),
        ));
    }
    let block_size = 1024u64 << log_block_size;
    let incompat = u32_at(0x60);
    let mut blocks = u64::from(u32_at(0x04));
    if incompat & 0x80 != 0 {
        blocks |= u64::from(u32_at(0x150)) << 32;
    }
    let per_group_max = 8 * block_size;
    let blocks_per_group = u64::from(u32_at(0x20));
    let inodes_per_group = u64::from(u32_at(0x28));
    if !(8..=per_group_max).contains(&blocks_per_group) {
        return Err(not_ext4(image, format!("invalid blocks per group ({blocks_per_group})")));
    }
    if !(1..=per_group_max).contains(&inodes_per_group) {
        return Err(not_ext4(image, format!("invalid inodes per group ({inodes_per_group})")));
    }
    if blocks == 0 || blocks.checked_mul(block_size).is_none_or(|bytes| bytes > file_len) {
        return Err(not_ext4(
            image,
            format!("{blocks} blocks of {block_size} bytes do not fit the {file_len}-byte disk"),
        ));
    }
    Ok(SuperblockFacts { needs_recovery: incompat & 0x4 != 0 })
}

fn open_image(image: &Path, chain: &Arc<Chain>, view: View) -> Result<Ext4> {
    let facts = check_superblock(image, chain)?;
    let reader = ImageReader { chain: Arc::clone(chain), cache: L2Cache::new(), view };
    Ext4::load(Box::new(reader)).map_err(|e| match e {
        Ext4Error::Incompatible(_) if facts.needs_recovery => {
            Error::UnfinishedJournal { image: image.to_path_buf(), source: e }
        }
        Ext4Error::Io(_) => {
            qcow2_fault(image, &e).unwrap_or(Error::ImageRead { image: image.to_path_buf(), at: None, source: e })
        }
        e => not_ext4(image, e),
    })
}

/// The qcow2 error behind a reader error, if that is what it is.
fn qcow2_fault(image: &Path, e: &Ext4Error) -> Option<Error> {
    e.as_io()?.downcast_ref::<Fault>()?.qcow2_error(image)
}

/// Maps a reader error met while handling `shown` to a user-facing error.
fn fs_error(image: &Path, shown: &str, e: Ext4Error) -> Error {
    match e {
        Ext4Error::NotFound | Ext4Error::NotADirectory => Error::PathNotFound { path: shown.to_string() },
        Ext4Error::PathTooLong => Error::PathTooLong { path: shown.to_string(), max: MAX_PATH_BYTES },
        Ext4Error::Io(_) => qcow2_fault(image, &e).unwrap_or(Error::ImageRead {
            image: image.to_path_buf(),
            at: Some(shown.to_string()),
            source: e,
        }),
        Ext4Error::Incompatible(_) | Ext4Error::Encrypted => {
            Error::Unsupported { image: image.to_path_buf(), path: shown.to_string(), source: e }
        }
        e => Error::Corrupt { image: image.to_path_buf(), path: shown.to_string(), source: e },
    }
}

fn ext4_path(bytes: &[u8]) -> Result<ext4_view::Path<'_>> {
    ext4_view::Path::try_from(bytes).map_err(|_| Error::MalformedPath { path: escape_guest_bytes(bytes) })
}

// ---------------------------------------------------------------------------------------------
// Resolving a guest path without letting the reader follow anything
// ---------------------------------------------------------------------------------------------

fn is_runtime_only(real: &[u8]) -> bool {
    RUNTIME_ONLY_PATHS.iter().any(|r| {
        let r = r.as_bytes();
        real.starts_with(r) && (real.len() == r.len() || real[r.len()] == b'/')
    })
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if dir != b"/" {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn join_shown(dir: &str, name: &[u8]) -> String {
    let escaped = escape_guest_bytes(name);
    if dir == "/" {
        format!("/{escaped}")
    } else {
        format!("{dir}/{escaped}")
    }
}

/// `path` with empty and `.` components dropped and `..` applied, as bytes.
fn lexical_normalise(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::new();
    for p in &parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

struct Target {
    /// Path in the image with no symlink component (safe to hand to ext4-view).
    real: Vec<u8>,
    /// The guest path as given, escaped for display.
    shown: String,
    /// The final component's inode (not followed).
    meta: Metadata,
}

fn locate(fs: &Ext4, image: &Path, guest_path: &str) -> Result<Target> {
    let literal = guest_path.as_bytes();
    match locate_bytes(fs, image, literal)? {
        Some(t) => Ok(t),
        None => {
            // A path copied from `list` output carries our escapes; try it decoded.
            if guest_path.contains('\\') {
                if let Some(raw) = unescape_guest_path(guest_path).filter(|raw| raw != literal) {
                    if let Some(t) = locate_bytes(fs, image, &raw)? {
                        return Ok(t);
                    }
                }
            }
            Err(Error::PathNotFound { path: escape_guest_bytes(literal) })
        }
    }
}

/// `None` when the path does not exist (or is runtime-only, which is shown the same way).
fn locate_bytes(fs: &Ext4, image: &Path, path: &[u8]) -> Result<Option<Target>> {
    let shown = escape_guest_bytes(path);
    if !path.starts_with(b"/") {
        return Err(Error::RelativePath { path: shown });
    }
    if path.contains(&0) {
        return Err(Error::NulInPath { path: shown });
    }
    if is_runtime_only(&lexical_normalise(path)) {
        return Ok(None);
    }
    let mut pending: Vec<Vec<u8>> = path.split(|&b| b == b'/').rev().map(<[u8]>::to_vec).collect();
    let mut real: Vec<u8> = b"/".to_vec();
    let mut follows = 0usize;
    let mut last_meta: Option<Metadata> = None;
    while let Some(comp) = pending.pop() {
        if comp.is_empty() || comp == b"." {
            continue;
        }
        if comp == b".." {
            // `real` has no symlinks, so its lexical parent is its real parent.
            let cut = real.iter().rposition(|&b| b == b'/').unwrap_or(0);
            real.truncate(cut.max(1));
            last_meta = None;
            continue;
        }
        let candidate = join(&real, &comp);
        if candidate.len() > MAX_PATH_BYTES {
            return Err(fs_error(image, &shown, Ext4Error::PathTooLong));
        }
        if is_runtime_only(&candidate) {
            return Ok(None);
        }
        // The prefix `real` has no symlinks and the final component is not followed, so the
        // reader follows nothing here.
        let meta = match fs.symlink_metadata(ext4_path(&candidate)?) {
            Ok(m) => m,
            Err(Ext4Error::NotFound | Ext4Error::NotADirectory) => return Ok(None),
            Err(e) => return Err(fs_error(image, &shown, e)),
        };
        let is_last = pending.iter().all(|c| c.is_empty() || c == b".");
        if meta.is_symlink() && !is_last {
            follows += 1;
            if follows > MAX_SYMLINK_FOLLOWS {
                return Err(Error::SymlinkLoop { path: shown });
            }
            let target = read_link_checked(fs, &candidate, &meta).ok_or_else(|| Error::UnreadableSymlink {
                image: image.to_path_buf(),
                link: escape_guest_bytes(&candidate),
                path: shown.clone(),
            })?;
            if target.starts_with(b"/") {
                real = b"/".to_vec();
            }
            pending.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
            last_meta = None;
            continue;
        }
        if !is_last && !meta.is_dir() {
            return Ok(None);
        }
        real = candidate;
        last_meta = Some(meta);
    }
    let meta = match last_meta {
        Some(m) => m,
        // The path ended at `/` or after a `..`: look at the directory itself.
        None => fs.symlink_metadata(ext4_path(&real)?).map_err(|e| fs_error(image, &shown, e))?,
    };
    Ok(Some(Target { real, shown, meta }))
}

/// A symlink's target, if its claimed size is sane and it reads cleanly. `real` must have no
/// symlink before its last component.
fn read_link_checked(fs: &Ext4, real: &[u8], meta: &Metadata) -> Option<Vec<u8>> {
    let len = meta.len();
    if !meta.is_symlink() || len == 0 || len > MAX_LINK_TARGET {
        return None;
    }
    let target = fs.read_link(ext4_view::Path::try_from(real).ok()?).ok()?;
    Some(target.as_ref().to_vec())
}

fn link_target(fs: &Ext4, real: &[u8], meta: &Metadata) -> Option<String> {
    read_link_checked(fs, real, meta).map(|t| escape_guest_bytes(&t))
}

fn artifact_type(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_dir() {
        Some("directory")
    } else if t.is_regular_file() {
        Some("file")
    } else if t.is_symlink() {
        Some("symlink")
    } else {
        None // devices, fifos, sockets: not shown (as the reference)
    }
}

// ---------------------------------------------------------------------------------------------
// Walking directories
// ---------------------------------------------------------------------------------------------

struct Job {
    real: Vec<u8>,
    shown: String,
    depth: usize,
    /// The size the directory's inode claims (checked before it is read).
    size: u64,
}

#[derive(Default)]
struct WalkState {
    queue: Vec<Job>,
    busy: usize,
    lookups: u64,
    failed: Option<Error>,
}

struct Walk<'a> {
    image: &'a Path,
    recursive: bool,
    limits: ListLimits,
    /// Entries listed so far by all workers, counted before each is stored.
    entries: AtomicUsize,
    /// Directory bytes (claimed inode sizes) read so far by all workers.
    dir_bytes: AtomicU64,
    state: Mutex<WalkState>,
    wake: Condvar,
}

/// Lists the directory `root` (already resolved by [`locate`] through verified metadata). A
/// recursive walk shares a queue of directories between up to [`MAX_WALKERS`] threads, each
/// with its own `Ext4` (the type is `!Send`) and L2 cache, all reading the one opened chain.
///
/// The walk reads through [`View::Walk`], which verifies no metadata checksums. `ext4-view` has
/// no call that lists a directory by inode, so every `read_dir` (and every `read_link`) resolves
/// its path from `/` again, and with checksums on it computes CRC32C (bytewise) over each
/// directory block on the way: measured, that was 68% of a 10,000-file listing, and skipping it
/// makes the listing ~3x faster. This is sound because the checksums were never a defence: the
/// guest writes its own disk and computes valid checksums for whatever it writes, so a hostile
/// image passes them anyway. What keeps the host safe are the bounds checked here before each
/// allocation, which apply to the walk unchanged; `ext4-view` parses images without checksums
/// (ext2/3, or ext4 without `metadata_csum`) the same way, and the fuzz target covers both.
/// What is lost is only the detection of accidental corruption inside the walked tree (a torn or
/// bit-flipped block lists as what it now says, bounded); resolving the caller's path and
/// reading a file still verify everything.
fn walk(image: &Path, chain: &Arc<Chain>, root: Job, recursive: bool, limits: ListLimits) -> Result<Vec<DiskEntry>> {
    let fs = open_image(image, chain, View::Walk)?;
    let walk = Walk {
        image,
        recursive,
        limits,
        entries: AtomicUsize::new(0),
        dir_bytes: AtomicU64::new(0),
        state: Mutex::new(WalkState::default()),
        wake: Condvar::new(),
    };
    walk.state.lock().unwrap().queue.push(root);
    let helpers =
        if recursive { std::thread::available_parallelism().map_or(1, usize::from).min(MAX_WALKERS) - 1 } else { 0 };
    let mut all = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..helpers)
            .map(|_| {
                let walk = &walk;
                scope.spawn(move || match open_image(walk.image, chain, View::Walk) {
                    Ok(fs) => walk.work_guarded(&fs),
                    Err(e) => {
                        walk.fail(e);
                        Vec::new()
                    }
                })
            })
            .collect();
        let mut all = walk.work_guarded(&fs);
        for h in handles {
            all.extend(h.join().unwrap_or_default());
        }
        all
    });
    if let Some(e) = walk.state.into_inner().unwrap().failed {
        return Err(e);
    }
    all.shrink_to_fit();
    Ok(all)
}

impl Walk<'_> {
    fn fail(&self, e: Error) {
        let mut st = self.state.lock().unwrap();
        st.failed.get_or_insert(e);
        self.wake.notify_all();
    }

    /// `work`, with a panic in the parser turned into a failure of the whole walk: the other
    /// workers must be told, or they would wait forever for the job that never finished.
    fn work_guarded(&self, fs: &Ext4) -> Vec<DiskEntry> {
        catch_unwind(AssertUnwindSafe(|| self.work(fs))).unwrap_or_else(|_| {
            self.fail(not_ext4(self.image, "the reader failed on corrupt data"));
            Vec::new()
        })
    }

    /// One worker: takes directories until the queue is empty and nobody can add more.
    fn work(&self, fs: &Ext4) -> Vec<DiskEntry> {
        let mut out = Vec::new();
        let mut found = Vec::new();
        loop {
            let job = {
                let mut st = self.state.lock().unwrap();
                loop {
                    if st.failed.is_some() {
                        return out;
                    }
                    if let Some(job) = st.queue.pop() {
                        st.busy += 1;
                        st.lookups += job.real.iter().filter(|&&b| b == b'/').count() as u64;
                        break job;
                    }
                    if st.busy == 0 {
                        self.wake.notify_all();
                        return out;
                    }
                    st = self.wake.wait(st).unwrap();
                }
            };
            let res = self.list_dir(fs, &job, &mut out, &mut found);
            let mut st = self.state.lock().unwrap();
            st.busy -= 1;
            let res = res.and_then(|()| {
                if st.lookups > self.limits.max_lookups {
                    Err(Error::TooMuchWork { path: job.shown.clone() })
                } else {
                    Ok(())
                }
            });
            match res {
                Ok(()) => {
                    let n = found.len();
                    // The queue is a stack: reversed, the subdirectories are taken in directory
                    // order, which is mostly inode order, so `ext4-view`'s 8-block read-ahead of
                    // the inode table serves the next directories too (in reverse order every
                    // directory missed it: ~10x more inode-table reads).
                    found.reverse();
                    st.queue.append(&mut found);
                    match n {
                        0 if st.busy == 0 && st.queue.is_empty() => self.wake.notify_all(),
                        0 => {}
                        1 => self.wake.notify_one(),
                        _ => self.wake.notify_all(),
                    }
                }
                Err(e) => {
                    st.failed.get_or_insert(e);
                    self.wake.notify_all();
                    return out;
                }
            }
        }
    }

    /// Counts one more entry of the whole listing; an error once there are too many.
    fn claim_entry(&self) -> Result<()> {
        let max = self.limits.max_entries;
        if self.entries.fetch_add(1, Ordering::Relaxed) >= max {
            return Err(Error::TooManyEntries { max });
        }
        Ok(())
    }

    /// Lists one directory into `out`; subdirectories to descend into go to `found`. Every bound
    /// is checked before what it bounds is read or stored: the directory's claimed size before
    /// reading it, the entry counts before keeping an entry.
    fn list_dir(&self, fs: &Ext4, job: &Job, out: &mut Vec<DiskEntry>, found: &mut Vec<Job>) -> Result<()> {
        let err = |e| fs_error(self.image, &job.shown, e);
        let limits = &self.limits;
        if job.size > limits.max_dir_bytes {
            return Err(Error::DirectoryTooLarge {
                path: job.shown.clone(),
                claimed: job.size,
                max: limits.max_dir_bytes,
            });
        }
        let read_so_far = self.dir_bytes.fetch_add(job.size, Ordering::Relaxed).saturating_add(job.size);
        if read_so_far > limits.max_total_dir_bytes {
            return Err(Error::ListingTooLarge { max: limits.max_total_dir_bytes });
        }
        let mut children = Vec::new();
        for entry in fs.read_dir(ext4_path(&job.real)?).map_err(err)? {
            let entry = entry.map_err(err)?;
            let name = entry.file_name();
            if name == "." || name == ".." {
                continue;
            }
            if children.len() >= limits.max_dir_entries {
                return Err(Error::TooManyDirectoryEntries { path: job.shown.clone(), max: limits.max_dir_entries });
            }
            children.push(entry);
        }
        // Path calls look a name up in the directory; with duplicate names (only a corrupt image
        // has them) that lookup may find another inode than the entry we iterated, e.g. a symlink
        // that the reader would follow. So a duplicated name is listed but never used in a path.
        let mut seen = HashSet::with_capacity(children.len());
        let duplicated: HashSet<ext4_view::DirEntryName<'_>> =
            children.iter().map(|e| e.file_name()).filter(|n| !seen.insert(*n)).collect();
        for entry in &children {
            let name_ref = entry.file_name();
            let unique = !duplicated.contains(&name_ref);
            let name: &[u8] = name_ref.as_ref();
            let real = join(&job.real, name);
            if is_runtime_only(&real) {
                continue;
            }
            let shown = join_shown(&job.shown, name);
            // The inode, not the directory entry's type byte, says what this is. An inode the
            // reader calls corrupt is still listed, typed by its directory entry, size 0, and
            // never entered: one bad inode should not hide the rest of the tree.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(Ext4Error::Corrupt(_)) => {
                    let t = entry.file_type().map_err(err)?;
                    let kind = if t.is_dir() {
                        "directory"
                    } else if t.is_symlink() {
                        "symlink"
                    } else if t.is_regular_file() {
                        "file"
                    } else {
                        continue;
                    };
                    self.claim_entry()?;
                    out.push(DiskEntry { path: shown, artifact_type: kind.into(), size_bytes: 0, link_target: None });
                    continue;
                }
                Err(e) => return Err(err(e)),
            };
            let Some(kind) = artifact_type(&meta) else { continue };
            let (size, link) = match kind {
                "directory" => {
                    if self.recursive && unique {
                        if job.depth + 1 > limits.max_depth {
                            return Err(Error::TooDeep { path: shown, max: limits.max_depth });
                        }
                        if real.len() > MAX_PATH_BYTES {
                            return Err(fs_error(self.image, &shown, Ext4Error::PathTooLong));
                        }
                        found.push(Job { real, shown: shown.clone(), depth: job.depth + 1, size: meta.len() });
                    }
                    (0, None)
                }
                "symlink" => (meta.len(), if unique { link_target(fs, &real, &meta) } else { None }),
                _ => (meta.len(), None),
            };
            self.claim_entry()?;
            out.push(DiskEntry { path: shown, artifact_type: kind.to_string(), size_bytes: size, link_target: link });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------------

fn already_exists(output: &Path) -> Error {
    Error::OutputExists { path: output.to_path_buf() }
}

/// The copy being written, invisible until `commit`.
enum PendingOutput {
    /// `O_TMPFILE`: has no name, so nothing is left behind if we fail or are killed.
    Anonymous(File),
    /// Fallback: a hidden temp file beside the output, removed on drop.
    Named(tempfile::NamedTempFile),
}

impl PendingOutput {
    fn create(dir: &Path, output: &Path) -> Result<Self> {
        let ctx = |e: io::Error| Error::io(format!("cannot write output_path {}", output.display()), e);
        if Path::new("/proc/self/fd").is_dir() {
            match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_TMPFILE).mode(0o600).open(dir) {
                Ok(f) => return Ok(PendingOutput::Anonymous(f)),
                // Filesystems without O_TMPFILE answer one of these; use a named temp file.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) => {}
                Err(e) => return Err(ctx(e)),
            }
        }
        let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".pyro-partial")
            .tempfile_in(dir)
            .map(PendingOutput::Named)
            .map_err(ctx)
    }

    fn file(&self) -> &File {
        match self {
            PendingOutput::Anonymous(f) => f,
            PendingOutput::Named(t) => t.as_file(),
        }
    }

    /// Gives the complete copy its name; fails (and cleans up) if `output` appeared meanwhile.
    fn commit(self, output: &Path) -> Result<()> {
        let ctx = |e: io::Error| Error::io(format!("cannot create output_path {}", output.display()), e);
        match self {
            PendingOutput::Anonymous(f) => {
                if let Err(e) = pyro_sys::link_anonymous_noreplace(&f, output) {
                    return Err(if e.kind() == io::ErrorKind::AlreadyExists { already_exists(output) } else { ctx(e) });
                }
                Ok(())
            }
            // renameat2(RENAME_NOREPLACE), or link + unlink where that is unsupported.
            PendingOutput::Named(t) => t.persist_noclobber(output).map(drop).map_err(|e| {
                if e.error.kind() == io::ErrorKind::AlreadyExists {
                    already_exists(output)
                } else {
                    ctx(e.error)
                }
            }),
        }
    }
}

/// `lseek(SEEK_DATA/SEEK_HOLE)`; `Ok(None)` for ENXIO (no data at or after `offset`).
fn seek_data_or_hole(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek on a descriptor we own; it has no memory effects.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(e) };
    }
    Ok(Some(r as u64))
}

/// Copies `src[0..len]` to `dst` at the same offsets, skipping holes and all-zero 4 KiB blocks.
fn copy_sparse(src: &File, dst: &File, len: u64) -> io::Result<()> {
    // A filesystem that can share extents (btrfs, XFS) clones the whole file at once: no data
    // moves and holes stay holes. ext4 and others answer with an error; copy by hand then.
    // SAFETY: FICLONE takes the source descriptor as its argument; both are ours and open.
    if unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) } == 0 {
        return Ok(());
    }
    // Zero blocks are skipped too: ext4 reports the cached pages of unwritten (preallocated,
    // zero) extents as data, so what SEEK_DATA calls data depends on the page cache (measured:
    // 115 MB copied instead of 48 MB after the image had been read once).
    copy_sparse_range(src, 0, dst, 0, len, true)
}

/// Copies `src[src_at..src_at + len]` to `dst` from `dst_at`, skipping the source's holes (and
/// with `skip_zeros`, its all-zero 4 KiB blocks).
fn copy_sparse_range(src: &File, src_at: u64, dst: &File, dst_at: u64, len: u64, skip_zeros: bool) -> io::Result<()> {
    let end = src_at + len;
    let mut pos = src_at;
    while pos < end {
        let data = match seek_data_or_hole(src, pos, libc::SEEK_DATA) {
            Ok(Some(d)) => d,
            Ok(None) => break,
            // No SEEK_DATA on this filesystem: copy the rest, leaving zero blocks as holes.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return copy_range(src, pos, dst, dst_at + (pos - src_at), end - pos, true);
            }
            Err(e) => return Err(e),
        };
        if data >= end {
            break;
        }
        let hole = seek_data_or_hole(src, data, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
        if hole <= data {
            return Err(io::Error::other("the image changed while it was exported"));
        }
        copy_range(src, data, dst, dst_at + (data - src_at), hole - data, skip_zeros)?;
        pos = hole;
    }
    Ok(())
}

/// Writes the disk of a qcow2 chain to `dst` (`size` bytes): each run the chain maps to a file
/// is copied (a raw backing file's holes and all-zero blocks skipped), zero and unallocated runs
/// are left as holes.
fn copy_chain(chain: &Chain, dst: &File, size: u64) -> std::result::Result<(), Fault> {
    let mut cache = L2Cache::new();
    let mut pos = 0;
    while pos < size {
        let (extent, len) = chain.map(&mut cache, pos, size - pos)?;
        if let Extent::Data { layer, offset } = extent {
            // A data cluster qemu never wrote out to its end reads as zeros there: a hole.
            let present = chain.present(layer, offset, len);
            let src = chain.file(layer);
            // All-zero blocks stay holes too (qemu writes out zeros, e.g. every cluster of a v2
            // overlay that `qemu-img convert` made; mkfs writes a zeroed journal into a raw
            // base): the bytes are read anyway, and checking them costs little.
            let copied = if chain.is_raw(layer) {
                copy_sparse_range(src, offset, dst, pos, present, true)
            } else {
                copy_range(src, offset, dst, pos, present, true)
            };
            copied.map_err(Fault::Io)?;
        }
        pos += len;
    }
    Ok(())
}

/// Copies one range with 1 MiB reads and writes. (Measured on ext4 against `copy_file_range`
/// and `cp --sparse=always`: fastest of the three.) With `skip_zeros`, all-zero 4 KiB blocks
/// are left unwritten (runs of the others are written at once).
fn copy_range(src: &File, src_at: u64, dst: &File, dst_at: u64, len: u64, skip_zeros: bool) -> io::Result<()> {
    const BLOCK: usize = 4096;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from((len - done).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = match src.read_at(&mut buf[..want], src_at + done) {
            Ok(0) => return Err(io::Error::other("the image shrank while it was exported")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if skip_zeros {
            // Runs of non-zero blocks are written at once; the zero test is a memcmp.
            static ZEROS: [u8; BLOCK] = [0; BLOCK];
            let mut run_start: Option<usize> = None;
            for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
                let at = i * BLOCK;
                match (block == &ZEROS[..block.len()], run_start) {
                    (false, None) => run_start = Some(at),
                    (true, Some(start)) => {
                        dst.write_all_at(&buf[start..at], dst_at + done + start as u64)?;
                        run_start = None;
                    }
                    _ => {}
                }
            }
            if let Some(start) = run_start {
                dst.write_all_at(&buf[start..n], dst_at + done + start as u64)?;
            }
        } else {
            dst.write_all_at(&buf[..n], dst_at + done)?;
        }
        done += n as u64;
    }
    Ok(())
}
