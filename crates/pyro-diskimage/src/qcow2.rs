//! The disk a stopped workspace's image shows, read in-process: a raw image, or a qcow2 (v2/v3)
//! overlay over a chain of read-only backing files (raw or qcow2), as `qemu-img create -f qcow2
//! -F raw|qcow2 -b <absolute base>` makes them.
//!
//! No crate fit (checked 2026-11-30): `qcow2-core` 0.3 and `qcow2` 0.1 refuse every backing
//! file, `qcow` 1.2 leaks and prints on the way to an unvalidated backing path and reads only
//! qcow backings, `qcow2-rs` 0.1 is an async read/write device for io_uring. So this is a small
//! read-only reader, bounded before it allocates:
//!
//! - the format of every layer is given, never sniffed: the top layer's by the caller (recorded
//!   by the host), each backing file's by the backing-format header extension qemu-img writes
//!   (`raw` or `qcow2`; none recorded means refused, never probed);
//! - a backing file name must be absolute; a chain has at most [`MAX_BACKING_DEPTH`] backing
//!   files, each a regular file met once (device and inode: no loops);
//! - header fields are checked against the file before anything is read at the offsets they
//!   give: cluster size 512 B..2 MiB, L1 table cluster-aligned, inside the file, at most
//!   [`MAX_L1_ENTRIES`] entries and large enough for the virtual size; L2 tables and data
//!   clusters aligned and inside the file; header extensions and the backing name inside the
//!   first cluster;
//! - refused with a clear error: encryption, external data files, extended L2 entries (subclusters),
//!   images qemu marked corrupt, unknown incompatible features, and compressed clusters (met
//!   when a read reaches one);
//! - L2 tables are cached per reader (bounded by [`L2_CACHE_BYTES`] per reader), files are
//!   opened once per request and read with `pread`, so a read through a chain costs a lookup
//!   per layer, not a reopen.

use crate::{Error, ImageFormat, Result};
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Backing files one image may have below it (a fork of a fork of ... of a workspace).
pub const MAX_BACKING_DEPTH: usize = 16;
/// L1 entries one qcow2 layer may have (qemu's own limit: a 32 MiB table). The table must also
/// lie inside the file, so a short file cannot claim a long one.
pub const MAX_L1_ENTRIES: u64 = (32 << 20) / 8;
/// Bytes of L2 tables one reader keeps (each walker thread of a listing has its own reader).
/// With 64 KiB clusters that is 256 tables, which map 128 GiB of guest disk.
pub const L2_CACHE_BYTES: usize = 16 << 20;

const MAGIC: u32 = 0x5146_49fb;
const MIN_CLUSTER_BITS: u32 = 9;
/// 2 MiB clusters, qemu's largest.
const MAX_CLUSTER_BITS: u32 = 21;
/// qemu refuses longer backing file names.
const MAX_BACKING_NAME: u32 = 1023;
const V2_HEADER_LEN: u64 = 72;
const V3_HEADER_LEN: u64 = 104;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_EXTERNAL_DATA: u64 = 1 << 2;
const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;
const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
/// Incompatible features a reader may ignore: a dirty image has possibly leaked refcounts
/// (never read here), and the compression type only matters to compressed clusters (refused).
const INCOMPAT_IGNORABLE: u64 = INCOMPAT_DIRTY | INCOMPAT_COMPRESSION_TYPE;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_EXTERNAL_DATA_FILE: u32 = 0x4441_5441;
const EXT_FULL_DISK_ENCRYPTION: u32 = 0x0537_be77;

/// Bits 9..55 of an L1 entry: the L2 table's host offset.
const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits 9..55 of a standard L2 entry: the data cluster's host offset.
const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_COMPRESSED: u64 = 1 << 62;
const L2_ZERO: u64 = 1;

/// Why a read through a chain failed. It travels through `ext4-view` as the boxed source of
/// `Ext4Error::Io`, and is turned back into [`Error`] by [`Fault::qcow2_error`] (or reported as
/// a read error of the image when it is plain I/O).
#[derive(Debug)]
pub(crate) enum Fault {
    /// The host could not read a layer's file.
    Io(io::Error),
    /// A read past the end of the disk (the filesystem claims more than the disk has).
    PastEnd { offset: u64, len: usize, size: u64 },
    /// A qcow2 layer is corrupt or uses something this reader refuses.
    Qcow2 { layer: PathBuf, reason: String },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // As the OS error alone, so a raw image's messages read as they always did.
            Fault::Io(e) => e.fmt(f),
            Fault::PastEnd { offset, len, size } => {
                write!(f, "a read of {len} bytes at {offset} is past the end of the {size}-byte disk")
            }
            Fault::Qcow2 { layer, reason } => write!(f, "{}: {reason}", layer.display()),
        }
    }
}

impl std::error::Error for Fault {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Fault::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl Fault {
    /// The user-facing error for a fault met while reading `image`; `None` for plain I/O, which
    /// the caller reports with its own context.
    pub(crate) fn qcow2_error(&self, image: &Path) -> Option<Error> {
        match self {
            Fault::Qcow2 { layer, reason } => Some(qcow2_error(image, layer, reason)),
            _ => None,
        }
    }
}

fn qcow2_error(image: &Path, layer: &Path, reason: &str) -> Error {
    let reason =
        if layer == image { reason.to_string() } else { format!("in backing file {}: {reason}", layer.display()) };
    Error::Qcow2 { image: image.to_path_buf(), reason }
}

/// One file of a chain.
struct Layer {
    path: PathBuf,
    file: File,
    file_len: u64,
    /// The disk size this layer shows; reads past it (in a backing file) are zeros.
    size: u64,
    kind: LayerKind,
}

enum LayerKind {
    Raw,
    Qcow2 { cluster_bits: u32, l1: Box<[u64]> },
}

/// An image and its backing files, opened once per request and shared (read-only, `pread`) by
/// every reader of that request.
pub(crate) struct Chain {
    /// `layers[0]` is the image asked for; each next one is the backing file of the one before.
    layers: Vec<Layer>,
}

/// Where a run of disk bytes comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extent {
    /// Zeros: a zero cluster, or nothing allocated anywhere in the chain.
    Zero,
    /// Bytes of `layers[layer]`'s file from `offset`.
    Data { layer: usize, offset: u64 },
}

impl Chain {
    /// Opens `image` as `format`, and for qcow2 its backing files, validating each header.
    pub(crate) fn open(image: &Path, format: ImageFormat) -> Result<Chain> {
        let mut layers: Vec<Layer> = Vec::new();
        let mut seen: Vec<(u64, u64)> = Vec::new();
        let mut next = Some((image.to_path_buf(), format));
        while let Some((path, format)) = next.take() {
            let is_top = layers.is_empty();
            let file = File::open(&path).map_err(|e| {
                if is_top {
                    Error::io(format!("cannot open workspace disk image {}", image.display()), e)
                } else {
                    qcow2_error(image, &path, &format!("cannot open the backing file: {e}"))
                }
            })?;
            let meta = file.metadata().map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
            if !meta.is_file() {
                return Err(if is_top {
                    Error::ImageNotAFile { image: image.to_path_buf() }
                } else {
                    qcow2_error(image, &path, "the backing file is not a regular file")
                });
            }
            if seen.contains(&(meta.dev(), meta.ino())) {
                return Err(qcow2_error(image, &path, "the backing chain has a loop (this file is met twice)"));
            }
            seen.push((meta.dev(), meta.ino()));
            let file_len = meta.len();
            let layer = match format {
                ImageFormat::Raw => Layer { path, file, file_len, size: file_len, kind: LayerKind::Raw },
                ImageFormat::Qcow2 => {
                    let header = Header::read(&file, file_len).map_err(|reason| qcow2_error(image, &path, &reason))?;
                    let l1 = read_l1(&file, &header).map_err(|reason| qcow2_error(image, &path, &reason))?;
                    if let Some(backing) = header.backing {
                        if layers.len() + 1 > MAX_BACKING_DEPTH {
                            return Err(qcow2_error(
                                image,
                                &path,
                                &format!("the backing chain is deeper than {MAX_BACKING_DEPTH} files"),
                            ));
                        }
                        next = Some(backing);
                    }
                    Layer {
                        path,
                        file,
                        file_len,
                        size: header.size,
                        kind: LayerKind::Qcow2 { cluster_bits: header.cluster_bits, l1 },
                    }
                }
            };
            layers.push(layer);
        }
        Ok(Chain { layers })
    }

    /// The size of the disk (the top layer's).
    pub(crate) fn size(&self) -> u64 {
        self.layers[0].size
    }

    /// The top layer's file (its metadata is the image's).
    pub(crate) fn top_file(&self) -> &File {
        &self.layers[0].file
    }

    /// Whether `layer` is a raw file (whose holes can be asked for with `SEEK_HOLE`).
    pub(crate) fn is_raw(&self, layer: usize) -> bool {
        matches!(self.layers[layer].kind, LayerKind::Raw)
    }

    /// The file of `layer`.
    pub(crate) fn file(&self, layer: usize) -> &File {
        &self.layers[layer].file
    }

    /// Bytes of `layer`'s file that exist from `offset` (at most `len`); the rest of a data
    /// cluster that qemu never wrote out reads as zeros.
    pub(crate) fn present(&self, layer: usize, offset: u64, len: u64) -> u64 {
        self.layers[layer].file_len.saturating_sub(offset).min(len)
    }

    /// Where the disk bytes from `offset` come from, and for how many bytes (1..=`len`) that
    /// answer holds. `offset + len` must not pass [`Chain::size`].
    pub(crate) fn map(
        &self,
        cache: &mut L2Cache,
        offset: u64,
        mut len: u64,
    ) -> std::result::Result<(Extent, u64), Fault> {
        for (index, layer) in self.layers.iter().enumerate() {
            if offset >= layer.size {
                return Ok((Extent::Zero, len));
            }
            len = len.min(layer.size - offset);
            match &layer.kind {
                LayerKind::Raw => {
                    return Ok((Extent::Data { layer: index, offset }, len));
                }
                LayerKind::Qcow2 { cluster_bits, l1 } => {
                    let bits = *cluster_bits;
                    let cluster_size = 1u64 << bits;
                    let l2_bits = bits - 3;
                    let cluster = offset >> bits;
                    let l1_index = usize::try_from(cluster >> l2_bits).unwrap_or(usize::MAX);
                    let mut l2_index = usize::try_from(cluster & ((1 << l2_bits) - 1)).unwrap_or(0);
                    let in_cluster = offset & (cluster_size - 1);
                    let l1_entry = l1.get(l1_index).copied().unwrap_or(0);
                    let l2_offset = l1_entry & L1_OFFSET_MASK;
                    if l2_offset == 0 {
                        // No L2 table: this whole L1 entry's span falls through to the backing.
                        let span_end = ((cluster >> l2_bits) + 1) << (bits + l2_bits);
                        len = len.min(span_end.saturating_sub(offset).max(1));
                        continue;
                    }
                    let table = cache.table(index, layer, l2_offset, cluster_size)?;
                    let first = classify(layer, table[l2_index], bits, offset)?;
                    let mut run = cluster_size - in_cluster;
                    // Extend the run over the next entries of the same table that say the same.
                    while run < len {
                        l2_index += 1;
                        let Some(&entry) = table.get(l2_index) else { break };
                        let next_offset = offset + run;
                        let same = match (first, classify(layer, entry, bits, next_offset)?) {
                            (Class::Unallocated, Class::Unallocated) | (Class::Zero, Class::Zero) => true,
                            (Class::Data(a), Class::Data(b)) => b == a + (run + in_cluster),
                            _ => false,
                        };
                        if !same {
                            break;
                        }
                        run += cluster_size;
                    }
                    len = len.min(run);
                    match first {
                        Class::Unallocated => continue,
                        Class::Zero => return Ok((Extent::Zero, len)),
                        Class::Data(host) => {
                            return Ok((Extent::Data { layer: index, offset: host + in_cluster }, len));
                        }
                    }
                }
            }
        }
        // Unallocated in every layer.
        Ok((Extent::Zero, len))
    }

    /// Reads `dst.len()` disk bytes from `offset`; a read past the disk's end is an error.
    pub(crate) fn read_exact_at(
        &self,
        cache: &mut L2Cache,
        dst: &mut [u8],
        offset: u64,
    ) -> std::result::Result<(), Fault> {
        let size = self.size();
        if offset.checked_add(dst.len() as u64).is_none_or(|end| end > size) {
            return Err(Fault::PastEnd { offset, len: dst.len(), size });
        }
        let mut done = 0usize;
        while done < dst.len() {
            let at = offset + done as u64;
            let (extent, len) = self.map(cache, at, (dst.len() - done) as u64)?;
            let len = len as usize; // <= dst.len() - done
            let part = &mut dst[done..done + len];
            match extent {
                Extent::Zero => part.fill(0),
                Extent::Data { layer, offset: host } => {
                    let present = self.present(layer, host, len as u64) as usize;
                    self.layers[layer].file.read_exact_at(&mut part[..present], host).map_err(Fault::Io)?;
                    part[present..].fill(0);
                }
            }
            done += len;
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Class {
    Unallocated,
    Zero,
    Data(u64),
}

/// What one standard L2 entry says, checked: compressed clusters are refused, a data cluster
/// must be aligned and start inside the file.
fn classify(layer: &Layer, entry: u64, cluster_bits: u32, guest: u64) -> std::result::Result<Class, Fault> {
    let fault = |reason: String| Fault::Qcow2 { layer: layer.path.clone(), reason };
    if entry & L2_COMPRESSED != 0 {
        return Err(fault(format!(
            "the cluster at disk offset {guest:#x} is compressed, and pyro reads no compressed qcow2 clusters \
             (convert the image with `qemu-img convert -O qcow2` without -c)"
        )));
    }
    if entry & L2_ZERO != 0 {
        return Ok(Class::Zero);
    }
    let host = entry & L2_OFFSET_MASK;
    if host == 0 {
        return Ok(Class::Unallocated);
    }
    if host & ((1 << cluster_bits) - 1) != 0 {
        return Err(fault(format!("the data cluster for disk offset {guest:#x} is not cluster-aligned ({host:#x})")));
    }
    if host >= layer.file_len {
        return Err(fault(format!(
            "the data cluster for disk offset {guest:#x} is at {host:#x}, past the end of the {}-byte file",
            layer.file_len
        )));
    }
    Ok(Class::Data(host))
}

struct CachedTable {
    entries: Box<[u64]>,
    /// The cache's `tick` when the table was last used.
    used: u64,
}

/// L2 tables one reader has read, least recently used dropped first.
pub(crate) struct L2Cache {
    /// By (layer index, table offset in that layer's file).
    tables: HashMap<(usize, u64), CachedTable>,
    bytes: usize,
    tick: u64,
}

impl L2Cache {
    pub(crate) fn new() -> Self {
        L2Cache { tables: HashMap::new(), bytes: 0, tick: 0 }
    }

    fn table(
        &mut self,
        index: usize,
        layer: &Layer,
        l2_offset: u64,
        cluster_size: u64,
    ) -> std::result::Result<&[u64], Fault> {
        self.tick += 1;
        let tick = self.tick;
        let key = (index, l2_offset);
        if !self.tables.contains_key(&key) {
            let fault = |reason: String| Fault::Qcow2 { layer: layer.path.clone(), reason };
            if l2_offset & (cluster_size - 1) != 0 {
                return Err(fault(format!("an L2 table offset is not cluster-aligned ({l2_offset:#x})")));
            }
            if l2_offset.checked_add(cluster_size).is_none_or(|end| end > layer.file_len) {
                return Err(fault(format!(
                    "an L2 table at {l2_offset:#x} ends past the end of the {}-byte file",
                    layer.file_len
                )));
            }
            // cluster_size <= 2 MiB (checked with the header) and inside the file.
            let mut raw = vec![0u8; cluster_size as usize];
            layer.file.read_exact_at(&mut raw, l2_offset).map_err(Fault::Io)?;
            let table: Box<[u64]> = raw.chunks_exact(8).map(be_u64).collect();
            let table_bytes = raw.len();
            while self.bytes + table_bytes > L2_CACHE_BYTES {
                let Some(oldest) = self.tables.iter().min_by_key(|(_, t)| t.used).map(|(k, _)| *k) else {
                    break;
                };
                if let Some(dropped) = self.tables.remove(&oldest) {
                    self.bytes -= dropped.entries.len() * 8;
                }
            }
            self.bytes += table_bytes;
            self.tables.insert(key, CachedTable { entries: table, used: tick });
        }
        let slot = self.tables.get_mut(&key).expect("inserted above");
        slot.used = tick;
        Ok(&slot.entries)
    }
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().expect("4 bytes"))
}

/// What the reader takes from a qcow2 header, validated.
struct Header {
    cluster_bits: u32,
    size: u64,
    l1_size: u64,
    l1_offset: u64,
    backing: Option<(PathBuf, ImageFormat)>,
}

impl Header {
    /// Reads and validates the header of a `file_len`-byte qcow2 file; the error is the reason.
    fn read(file: &File, file_len: u64) -> std::result::Result<Header, String> {
        if file_len < V2_HEADER_LEN {
            return Err(format!("the {file_len}-byte file is too small for a qcow2 header"));
        }
        let mut fixed = [0u8; V2_HEADER_LEN as usize];
        file.read_exact_at(&mut fixed, 0).map_err(|e| format!("cannot read the header: {e}"))?;
        if be_u32(&fixed[0..4]) != MAGIC {
            return Err("no qcow2 magic (the image was recorded as qcow2)".into());
        }
        let version = be_u32(&fixed[4..8]);
        if version != 2 && version != 3 {
            return Err(format!("qcow2 version {version} is not 2 or 3"));
        }
        let backing_offset = be_u64(&fixed[8..16]);
        let backing_len = be_u32(&fixed[16..20]);
        let cluster_bits = be_u32(&fixed[20..24]);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(format!(
                "cluster_bits {cluster_bits} is outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS} (512 B to 2 MiB clusters)"
            ));
        }
        let cluster_size = 1u64 << cluster_bits;
        let size = be_u64(&fixed[24..32]);
        if be_u32(&fixed[32..36]) != 0 {
            return Err("the image is encrypted, and pyro reads no encrypted qcow2 images".into());
        }
        let l1_size = u64::from(be_u32(&fixed[36..40]));
        let l1_offset = be_u64(&fixed[40..48]);

        // The header, its extensions and the backing name all live in the first cluster.
        let first_len = cluster_size.min(file_len) as usize;
        let mut first = vec![0u8; first_len];
        file.read_exact_at(&mut first, 0).map_err(|e| format!("cannot read the header: {e}"))?;
        let header_len = if version == 3 {
            if first.len() < V3_HEADER_LEN as usize {
                return Err("the file is too small for a qcow2 v3 header".into());
            }
            let incompat = be_u64(&first[72..80]);
            if incompat & INCOMPAT_CORRUPT != 0 {
                return Err("qemu marked the image corrupt (check it with `qemu-img check`)".into());
            }
            if incompat & INCOMPAT_EXTERNAL_DATA != 0 {
                return Err("the image keeps its data in an external data file, which pyro does not read".into());
            }
            if incompat & INCOMPAT_EXTENDED_L2 != 0 {
                return Err("the image has extended L2 entries (subclusters), which pyro does not read".into());
            }
            let unknown = incompat & !(INCOMPAT_IGNORABLE | INCOMPAT_CORRUPT);
            if unknown != 0 {
                return Err(format!("the image has unknown incompatible features {unknown:#x}"));
            }
            let header_len = u64::from(be_u32(&first[100..104]));
            if header_len < V3_HEADER_LEN || header_len % 8 != 0 || header_len > first.len() as u64 {
                return Err(format!("header_length {header_len} is invalid"));
            }
            header_len
        } else {
            V2_HEADER_LEN
        };

        // The backing file name, if any.
        let name = if backing_offset != 0 {
            if backing_len == 0 || backing_len > MAX_BACKING_NAME {
                return Err(format!("the backing file name is {backing_len} bytes (1..={MAX_BACKING_NAME} accepted)"));
            }
            let end = backing_offset.checked_add(u64::from(backing_len)).filter(|&e| e <= first.len() as u64);
            let Some(end) = end else {
                return Err("the backing file name lies outside the first cluster".into());
            };
            if backing_offset < header_len {
                return Err("the backing file name overlaps the header".into());
            }
            Some(first[backing_offset as usize..end as usize].to_vec())
        } else {
            None
        };

        // Header extensions: from the end of the header to the backing name (or the cluster's end).
        let ext_end = if backing_offset != 0 { backing_offset as usize } else { first.len() };
        let mut at = header_len as usize;
        let mut backing_format: Option<Vec<u8>> = None;
        while at + 8 <= ext_end {
            let kind = be_u32(&first[at..at + 4]);
            let len = be_u32(&first[at + 4..at + 8]) as usize;
            if kind == EXT_END {
                break;
            }
            let data_end = (at + 8).checked_add(len).filter(|&e| e <= ext_end);
            let Some(data_end) = data_end else {
                return Err(format!("header extension {kind:#x} overruns the header area"));
            };
            match kind {
                EXT_BACKING_FORMAT => backing_format = Some(first[at + 8..data_end].to_vec()),
                EXT_EXTERNAL_DATA_FILE => {
                    return Err("the image names an external data file, which pyro does not read".into());
                }
                EXT_FULL_DISK_ENCRYPTION => {
                    return Err("the image is encrypted, and pyro reads no encrypted qcow2 images".into());
                }
                _ => {}
            }
            at = data_end.div_ceil(8) * 8;
        }

        let backing = match name {
            None => None,
            Some(name) => {
                let shown = crate::escape_guest_bytes(&name);
                if !name.starts_with(b"/") {
                    return Err(format!("the backing file name {shown} is not an absolute path"));
                }
                if name.contains(&0) {
                    return Err(format!("the backing file name {shown} contains a NUL byte"));
                }
                let format = match backing_format.as_deref() {
                    Some(b"raw") => ImageFormat::Raw,
                    Some(b"qcow2") => ImageFormat::Qcow2,
                    Some(other) => {
                        return Err(format!(
                            "the backing file {shown} has format {}, not raw or qcow2",
                            crate::escape_guest_bytes(other)
                        ));
                    }
                    None => {
                        return Err(format!(
                            "no backing format is recorded for the backing file {shown} (pyro never probes a \
                             format: create overlays with `qemu-img create -F raw|qcow2`)"
                        ));
                    }
                };
                Some((PathBuf::from(std::ffi::OsStr::from_bytes(&name)), format))
            }
        };

        // The L1 table: bounded, aligned, inside the file, and covering the disk.
        if l1_size > MAX_L1_ENTRIES {
            return Err(format!("l1_size {l1_size} is above {MAX_L1_ENTRIES} entries"));
        }
        if l1_offset & (cluster_size - 1) != 0 {
            return Err(format!("the L1 table offset {l1_offset:#x} is not cluster-aligned"));
        }
        if l1_size > 0 && l1_offset == 0 {
            return Err("the L1 table overlaps the header".into());
        }
        if l1_offset.checked_add(l1_size * 8).is_none_or(|end| end > file_len) {
            return Err(format!(
                "the L1 table ({l1_size} entries at {l1_offset:#x}) ends past the end of the {file_len}-byte file"
            ));
        }
        // Bytes one L1 entry maps: an L2 table of cluster_size / 8 entries, each one cluster.
        let per_l1 = 1u128 << (2 * cluster_bits - 3);
        let needed = u128::from(size).div_ceil(per_l1);
        if needed > u128::from(l1_size) {
            return Err(format!("l1_size {l1_size} is too small for the {size}-byte disk ({needed} needed)"));
        }
        Ok(Header { cluster_bits, size, l1_size, l1_offset, backing })
    }
}

/// Reads the L1 table the (validated) header describes: at most 32 MiB, and inside the file.
fn read_l1(file: &File, header: &Header) -> std::result::Result<Box<[u64]>, String> {
    let bytes = (header.l1_size * 8) as usize;
    let mut raw: Vec<u8> = Vec::new();
    raw.try_reserve_exact(bytes).map_err(|_| format!("not enough memory for a {bytes}-byte L1 table"))?;
    raw.resize(bytes, 0);
    file.read_exact_at(&mut raw, header.l1_offset).map_err(|e| format!("cannot read the L1 table: {e}"))?;
    Ok(raw.chunks_exact(8).map(be_u64).collect())
}
