//! OpenStack config drive images: ISO 9660 with Rock Ridge and Joliet, labelled `config-2`.
//!
//! Nova builds a config drive with `genisoimage -r -J -V config-2`; guests (cloud-init, busybox
//! `findfs LABEL=config-2`, Linux's `iso9660` driver) find it by its volume label and read long,
//! lower-case names such as `openstack/latest/meta_data.json`. Plain ISO 9660 only has upper-case
//! 8.3 names, so this writer records every name three times:
//!
//! - an ISO 9660 level 1 identifier (`META_DAT.JSO;1`, made unique within its directory), which
//!   any reader understands;
//! - a Rock Ridge (IEEE P1282, on top of SUSP IEEE P1281) `NM` entry in the record's System Use
//!   field, with the exact name, plus `PX` (mode `0444` files, `0555` directories, uid/gid 0, as
//!   `genisoimage -r` does), `TF` (time stamps) and `RR` (which entries are present). Linux uses
//!   these first;
//! - a Joliet identifier (UCS-2/UTF-16 big-endian, at most 64 code units, `;1` after file names)
//!   in a second directory tree reached from the Joliet supplementary volume descriptor. Linux
//!   falls back to it when Rock Ridge is off (`-o norock`); Windows reads it.
//!
//! Image layout, in 2048-byte sectors:
//!
//! | sector | contents |
//! | --- | --- |
//! | 0–15 | system area, zeros |
//! | 16 | primary volume descriptor (PVD): label `config-2`, root directory record |
//! | 17 | Joliet supplementary volume descriptor (SVD, escape `%/E`, UCS-2 level 3) |
//! | 18 | volume descriptor set terminator |
//! | 19… | PVD path tables, type L (little-endian) then type M (big-endian) |
//! | … | SVD path tables, type L then type M |
//! | … | PVD directory extents, one per directory, in path-table order |
//! | … | Joliet directory extents, in their path-table order |
//! | … | SUSP continuation areas (the `ER` entry, long `NM` names) |
//! | … | file data, each file from a sector boundary, shared by both trees |
//!
//! Path tables list every directory ordered by depth, then parent number, then identifier
//! (ECMA-119 9.4, 6.9.1). Each directory extent starts with `.` and `..` records and holds its
//! entries sorted by identifier (ECMA-119 9.3); a record never crosses a sector boundary. The
//! root's `.` record in the PVD tree carries `SP` (SUSP in use), and through a `CE` continuation
//! entry the `ER` entry `RRIP_1991A` that tells readers Rock Ridge is present (ER does not fit in
//! the 255-byte record itself). A Rock Ridge name too long to fit in its record goes, split into
//! several `NM` entries, into a continuation area as well; continuation areas never cross a sector
//! boundary, as Linux requires. Empty files get extent 0 and length 0.
//!
//! The image is deterministic: every time stamp is 2020-01-01 00:00:00 UTC and the layout depends
//! only on the paths and contents given. Directories deeper than ISO 9660's eight levels are
//! written as they are (no Rock Ridge relocation); Linux, cloud-init and isoinfo read them.
//! Linux's driver shows Rock Ridge names of at most 253 bytes: it cuts 254- and 255-byte names
//! (accepted here, and recorded whole) to 250 bytes, as it does for genisoimage's images.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::path::Path;

/// Errors of the config drive builder.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    /// A file path is not a plain relative path; `reason` says which rule it breaks.
    #[error("invalid config drive path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// The same path is given twice.
    #[error("config drive path {0:?} is given more than once")]
    DuplicatePath(String),
    /// A path uses a file as a directory, or names as a file what another path needs as a
    /// directory.
    #[error(
        "config drive path {0:?} conflicts with another path: one needs it (or a parent) to be a \
         file, the other a directory"
    )]
    FileDirectoryConflict(String),
    /// A file is larger than one ISO 9660 extent can describe.
    #[error("config drive file {path:?} is {size} bytes; ISO 9660 files are smaller than 4 GiB")]
    FileTooLarge { path: String, size: usize },
    /// More directories than ISO 9660 path tables can number.
    #[error("config drive has {0} directories; ISO 9660 path tables number at most 65535")]
    TooManyDirectories(usize),
    /// The image would need more sectors than ISO 9660's 32-bit sector numbers can address.
    #[error("config drive image would exceed ISO 9660's limit of 2^32 sectors")]
    ImageTooLarge,
    /// Creating or writing the image file failed.
    #[error("writing config drive image: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes an ISO 9660 image labelled `config-2` holding `files` (paths relative to the root,
/// '/'-separated, e.g. "openstack/latest/meta_data.json") to `dest` (created or truncated).
///
/// Every path is checked before `dest` is touched, so bad input leaves an existing file alone.
/// Directories are implied by the paths; there is no way to record an empty directory.
pub fn write_iso(dest: &Path, files: &[(String, Vec<u8>)]) -> Result<(), ConfigDriveError> {
    let layout = ImageLayout::plan(files)?;
    let metadata = layout.metadata_sectors();
    let mut writer = BufWriter::new(std::fs::File::create(dest)?);
    writer.write_all(&metadata)?;
    let zeros = [0u8; SECTOR_SIZE];
    for file in &layout.source.files {
        writer.write_all(file.contents)?;
        let tail = file.contents.len() % SECTOR_SIZE;
        if tail != 0 {
            writer.write_all(&zeros[tail..])?;
        }
    }
    writer.flush()?;
    Ok(())
}

/// Bytes in a logical sector (and logical block) of the image.
const SECTOR_SIZE: usize = 2048;
/// Sector of the primary volume descriptor, right after the 16-sector system area.
const PRIMARY_DESCRIPTOR_SECTOR: u32 = 16;
/// Sector of the Joliet supplementary volume descriptor.
const JOLIET_DESCRIPTOR_SECTOR: u32 = 17;
/// Sector of the volume descriptor set terminator.
const TERMINATOR_SECTOR: u32 = 18;
/// First sector after the volume descriptors, where the path tables start.
const FIRST_PATH_TABLE_SECTOR: u32 = 19;
/// The volume label guests look for.
const VOLUME_LABEL: &str = "config-2";
const SYSTEM_IDENTIFIER: &str = "LINUX";
const PUBLISHER_IDENTIFIER: &str = "YUNHE";
const APPLICATION_IDENTIFIER: &str = "YUNHE CONFIG DRIVE";
/// Longest path component accepted, as Linux's NAME_MAX.
const MAX_COMPONENT_BYTES: usize = 255;
/// Longest directory record written: the length is one byte and kept even.
const MAX_DIRECTORY_RECORD_LENGTH: usize = 254;
/// Bytes of a directory record before its file identifier.
const DIRECTORY_RECORD_HEADER_LENGTH: usize = 33;
/// File flag bit of a directory record: the entry is a directory.
const FILE_FLAG_DIRECTORY: u8 = 0x02;
/// Directory record time (ECMA-119 9.1.5): 2020-01-01 00:00:00, offset from GMT 0.
const RECORDING_TIME: [u8; 7] = [120, 1, 1, 0, 0, 0, 0];
/// Volume descriptor time (ECMA-119 8.4.26.1) digits; a zero GMT offset byte follows.
const VOLUME_TIME_DIGITS: &[u8; 16] = b"2020010100000000";
/// Volume descriptor time meaning "not specified".
const UNSPECIFIED_TIME_DIGITS: &[u8; 16] = b"0000000000000000";
/// File identifier of a directory's `.` record.
const SELF_IDENTIFIER: [u8; 1] = [0x00];
/// File identifier of a directory's `..` record.
const PARENT_IDENTIFIER: [u8; 1] = [0x01];
/// Longest ISO 9660 level 1 file name (before the dot) and directory name.
const PRIMARY_NAME_MAX: usize = 8;
/// Longest ISO 9660 level 1 file name extension.
const PRIMARY_EXTENSION_MAX: usize = 3;
/// Longest Joliet identifier, in UTF-16 code units, without the `;1` version.
const JOLIET_NAME_MAX_UNITS: usize = 64;
/// Rock Ridge mode of files: regular, r--r--r--.
const FILE_MODE: u32 = 0o100_444;
/// Rock Ridge mode of directories: directory, r-xr-xr-x.
const DIRECTORY_MODE: u32 = 0o040_555;
/// Length of a SUSP `CE` (continuation area) entry.
const CONTINUATION_ENTRY_LENGTH: usize = 28;
/// Length of an `NM` entry without its name bytes.
const NAME_ENTRY_HEADER_LENGTH: usize = 5;
/// Most name bytes in one `NM` entry (entry lengths are one byte).
const NAME_ENTRY_MAX_NAME_BYTES: usize = 250;
/// `NM` flag: the name continues in the next `NM` entry.
const NAME_CONTINUES: u8 = 0x01;
/// `RR` flags (RRIP 1.09 4.1.7) of the entries this writer records.
const RR_HAS_PX: u8 = 0x01;
const RR_HAS_NM: u8 = 0x08;
const RR_HAS_TF: u8 = 0x80;
/// `TF` flags: modification, access and attribute change times, 7-byte format.
const TF_MODIFY_ACCESS_ATTRIBUTES: u8 = 0x02 | 0x04 | 0x08;
/// `ER` entry texts of Rock Ridge 1.09 (RRIP 5.5).
const ROCK_RIDGE_IDENTIFIER: &str = "RRIP_1991A";
const ROCK_RIDGE_DESCRIPTOR: &str =
    "THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ROCK_RIDGE_SOURCE: &str = "PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE \
     PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

/// A 16-bit number recorded both little- and big-endian (ECMA-119 7.2.3).
fn both_endian_u16(value: u16) -> [u8; 4] {
    let [low, high] = value.to_le_bytes();
    [low, high, high, low]
}

/// A 32-bit number recorded both little- and big-endian (ECMA-119 7.3.3).
fn both_endian_u32(value: u32) -> [u8; 8] {
    let mut both = [0u8; 8];
    both[..4].copy_from_slice(&value.to_le_bytes());
    both[4..].copy_from_slice(&value.to_be_bytes());
    both
}

/// Number of sectors `bytes` bytes occupy.
fn sectors_for(bytes: usize) -> u64 {
    // usize is at most 64 bits on every target Rust supports.
    bytes.div_ceil(SECTOR_SIZE) as u64
}

/// Splits and checks a path: relative, '/'-separated, no empty, `.` or `..` components.
fn path_components(path: &str) -> Result<Vec<&str>, ConfigDriveError> {
    let invalid = |reason| ConfigDriveError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("the path is empty"));
    }
    if path.starts_with('/') {
        return Err(invalid(
            "the path is absolute; paths are relative to the drive's root",
        ));
    }
    if path.contains('\0') {
        return Err(invalid("the path contains a NUL byte"));
    }
    let components: Vec<&str> = path.split('/').collect();
    for component in &components {
        if component.is_empty() {
            return Err(invalid(
                "the path has an empty component (a doubled or trailing '/')",
            ));
        }
        if *component == "." || *component == ".." {
            return Err(invalid("the path has a '.' or '..' component"));
        }
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(invalid("a path component is longer than 255 bytes"));
        }
    }
    Ok(components)
}

/// What a directory entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryTarget {
    /// Index into [`SourceTree::directories`].
    Directory(usize),
    /// Index into [`SourceTree::files`].
    File(usize),
}

/// One file to record, with its length checked to fit an extent.
struct SourceFile<'a> {
    contents: &'a [u8],
    length: u32,
}

/// One directory of the tree the paths describe, entries keyed by their real names.
#[derive(Default)]
struct SourceDirectory<'a> {
    entries: BTreeMap<&'a str, EntryTarget>,
}

impl SourceDirectory<'_> {
    fn subdirectory_count(&self) -> usize {
        self.entries
            .values()
            .filter(|target| matches!(target, EntryTarget::Directory(_)))
            .count()
    }
}

/// The directory tree the caller's paths describe; directory 0 is the root.
struct SourceTree<'a> {
    directories: Vec<SourceDirectory<'a>>,
    /// Files in the caller's order, which is also the order of their data in the image.
    files: Vec<SourceFile<'a>>,
}

impl<'a> SourceTree<'a> {
    fn build(files: &'a [(String, Vec<u8>)]) -> Result<Self, ConfigDriveError> {
        let mut tree = SourceTree {
            directories: vec![SourceDirectory::default()],
            files: Vec::with_capacity(files.len()),
        };
        for (path, contents) in files {
            let components = path_components(path)?;
            let Some((file_name, parents)) = components.split_last() else {
                return Err(ConfigDriveError::InvalidPath {
                    path: path.clone(),
                    reason: "the path is empty",
                });
            };
            let mut directory = 0;
            for name in parents {
                directory = match tree.directories[directory].entries.get(name) {
                    Some(EntryTarget::Directory(existing)) => *existing,
                    Some(EntryTarget::File(_)) => {
                        return Err(ConfigDriveError::FileDirectoryConflict(path.clone()));
                    }
                    None => {
                        let created = tree.directories.len();
                        tree.directories.push(SourceDirectory::default());
                        tree.directories[directory]
                            .entries
                            .insert(name, EntryTarget::Directory(created));
                        created
                    }
                };
            }
            match tree.directories[directory].entries.get(file_name) {
                Some(EntryTarget::File(_)) => {
                    return Err(ConfigDriveError::DuplicatePath(path.clone()));
                }
                Some(EntryTarget::Directory(_)) => {
                    return Err(ConfigDriveError::FileDirectoryConflict(path.clone()));
                }
                None => {}
            }
            let length =
                u32::try_from(contents.len()).map_err(|_| ConfigDriveError::FileTooLarge {
                    path: path.clone(),
                    size: contents.len(),
                })?;
            let file = tree.files.len();
            tree.files.push(SourceFile { contents, length });
            tree.directories[directory]
                .entries
                .insert(file_name, EntryTarget::File(file));
        }
        if tree.directories.len() > usize::from(u16::MAX) {
            return Err(ConfigDriveError::TooManyDirectories(tree.directories.len()));
        }
        Ok(tree)
    }
}

/// Which of the two directory trees of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Namespace {
    /// The PVD's tree: ISO 9660 level 1 identifiers plus Rock Ridge.
    Primary,
    /// The Joliet SVD's tree: UCS-2 identifiers.
    Joliet,
}

/// Where a SUSP continuation area sits: `sector` counts from the first continuation sector.
#[derive(Clone, Copy, Debug, Default)]
struct ContinuationSlot {
    sector: u32,
    offset: u32,
}

/// The System Use field of one directory record (empty in the Joliet tree).
#[derive(Debug, Default)]
struct SystemUse {
    /// SUSP entries recorded in the directory record itself; they do not depend on the layout.
    in_record: Vec<u8>,
    /// SUSP entries recorded in a continuation area, reached through a `CE` entry that follows
    /// `in_record`; empty when everything fits in the record.
    in_continuation: Vec<u8>,
    continuation: ContinuationSlot,
}

impl SystemUse {
    fn encoded_length(&self) -> usize {
        if self.in_continuation.is_empty() {
            self.in_record.len()
        } else {
            self.in_record.len() + CONTINUATION_ENTRY_LENGTH
        }
    }

    /// Appends the field, with the `CE` entry pointing into the sectors from `continuation_base`.
    fn encode(&self, continuation_base: u32, record: &mut Vec<u8>) {
        record.extend_from_slice(&self.in_record);
        if !self.in_continuation.is_empty() {
            // CONTINUATION_ENTRY_LENGTH (28) fits a byte; continuation areas stay within a
            // sector, so their length fits 32 bits.
            let length = self.in_continuation.len() as u32;
            record.extend_from_slice(&[b'C', b'E', CONTINUATION_ENTRY_LENGTH as u8, 1]);
            record.extend_from_slice(&both_endian_u32(
                continuation_base.saturating_add(self.continuation.sector),
            ));
            record.extend_from_slice(&both_endian_u32(self.continuation.offset));
            record.extend_from_slice(&both_endian_u32(length));
        }
    }
}

/// Appends a SUSP entry: signature, length, version 1, then `data`. Callers keep `data` short
/// enough for the one-byte length.
fn push_susp_entry(area: &mut Vec<u8>, signature: &[u8; 2], data: &[&[u8]]) {
    let length = 4 + data.iter().map(|part| part.len()).sum::<usize>();
    area.extend_from_slice(signature);
    area.push(length as u8);
    area.push(1);
    for part in data {
        area.extend_from_slice(part);
    }
}

/// The POSIX attributes a Rock Ridge `PX` entry records.
#[derive(Clone, Copy)]
struct PosixAttributes {
    mode: u32,
    links: u32,
}

impl PosixAttributes {
    const FILE: PosixAttributes = PosixAttributes {
        mode: FILE_MODE,
        links: 1,
    };

    fn directory(subdirectories: usize) -> PosixAttributes {
        PosixAttributes {
            mode: DIRECTORY_MODE,
            // A directory's link count is 2 plus its subdirectories; the path tables cap
            // directories at 65535, so this fits.
            links: 2 + u32::try_from(subdirectories).unwrap_or(u32::MAX - 2),
        }
    }
}

/// Length of a directory record's fixed part plus identifier and padding byte.
fn record_length_before_system_use(identifier_length: usize) -> usize {
    let length = DIRECTORY_RECORD_HEADER_LENGTH + identifier_length;
    length + length % 2
}

/// Builds the Rock Ridge System Use field of a record with an identifier of
/// `identifier_length` bytes. `name` is the real name (`None` for `.` and `..`); `root_self`
/// marks the root's `.` record, which also carries `SP` and `ER`.
fn rock_ridge_system_use(
    identifier_length: usize,
    name: Option<&str>,
    attributes: PosixAttributes,
    root_self: bool,
) -> SystemUse {
    let mut in_record = Vec::new();
    let mut in_continuation = Vec::new();
    if root_self {
        // SP: check bytes 0xBE 0xEF, no bytes skipped before each System Use field.
        push_susp_entry(&mut in_record, b"SP", &[&[0xBE, 0xEF, 0]]);
        // ER (4 + 4 + 10 + 84 + 135 = 237 bytes) does not fit beside the other entries.
        let texts = [
            ROCK_RIDGE_IDENTIFIER,
            ROCK_RIDGE_DESCRIPTOR,
            ROCK_RIDGE_SOURCE,
        ];
        let [identifier, descriptor, source] = texts.map(str::as_bytes);
        push_susp_entry(
            &mut in_continuation,
            b"ER",
            &[
                &[
                    identifier.len() as u8,
                    descriptor.len() as u8,
                    source.len() as u8,
                    1,
                ],
                identifier,
                descriptor,
                source,
            ],
        );
    }
    let mut flags = RR_HAS_PX | RR_HAS_TF;
    if name.is_some() {
        flags |= RR_HAS_NM;
    }
    push_susp_entry(&mut in_record, b"RR", &[&[flags]]);
    push_susp_entry(
        &mut in_record,
        b"PX",
        &[
            &both_endian_u32(attributes.mode),
            &both_endian_u32(attributes.links),
            &both_endian_u32(0),
            &both_endian_u32(0),
        ],
    );
    push_susp_entry(
        &mut in_record,
        b"TF",
        &[
            &[TF_MODIFY_ACCESS_ATTRIBUTES],
            &RECORDING_TIME,
            &RECORDING_TIME,
            &RECORDING_TIME,
        ],
    );
    if let Some(name) = name {
        let room = MAX_DIRECTORY_RECORD_LENGTH
            .saturating_sub(record_length_before_system_use(identifier_length))
            .saturating_sub(in_record.len());
        let whole_entry = NAME_ENTRY_HEADER_LENGTH + name.len();
        if in_continuation.is_empty() && whole_entry <= room {
            push_susp_entry(&mut in_record, b"NM", &[&[0], name.as_bytes()]);
        } else {
            let mut pieces = name.as_bytes().chunks(NAME_ENTRY_MAX_NAME_BYTES).peekable();
            while let Some(piece) = pieces.next() {
                let piece_flags = if pieces.peek().is_some() {
                    NAME_CONTINUES
                } else {
                    0
                };
                push_susp_entry(&mut in_continuation, b"NM", &[&[piece_flags], piece]);
            }
        }
    }
    SystemUse {
        in_record,
        in_continuation,
        continuation: ContinuationSlot::default(),
    }
}

/// The ISO 9660 level 1 name of `name`: upper-case letters, digits and `_`, a name of at most
/// eight characters and, for files, an extension of at most three.
fn primary_name_parts(name: &str, is_directory: bool) -> (String, String) {
    let to_d_character = |character: char| {
        if character.is_ascii_alphanumeric() {
            character.to_ascii_uppercase()
        } else {
            '_'
        }
    };
    if is_directory {
        let base = name.chars().map(to_d_character).take(PRIMARY_NAME_MAX);
        return (base.collect(), String::new());
    }
    let (stem, extension) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot + 1..]),
        _ => (name, ""),
    };
    let base: String = stem
        .chars()
        .map(to_d_character)
        .take(PRIMARY_NAME_MAX)
        .collect();
    let extension = extension
        .chars()
        .map(to_d_character)
        .take(PRIMARY_EXTENSION_MAX)
        .collect();
    (base, extension)
}

/// `name` as Joliet UTF-16 code units, with characters Joliet forbids (controls, `*/:;?\`)
/// replaced by `_`.
fn joliet_units(name: &str) -> Vec<u16> {
    name.encode_utf16()
        .map(|unit| {
            if unit < 0x20 || matches!(unit, 0x2A | 0x2F | 0x3A | 0x3B | 0x3F | 0x5C) {
                u16::from(b'_')
            } else {
                unit
            }
        })
        .collect()
}

/// The first `max` code units of `units`, without splitting a surrogate pair.
fn truncate_units(units: &[u16], max: usize) -> &[u16] {
    if units.len() <= max {
        return units;
    }
    let mut end = max;
    if end > 0 && (0xD800..0xDC00).contains(&units[end - 1]) {
        end -= 1;
    }
    &units[..end]
}

/// An entry of a directory as one namespace records it.
#[derive(Debug)]
struct NamespaceEntry {
    /// File identifier of the directory record.
    identifier: Vec<u8>,
    /// Order of records within the directory (ECMA-119 9.3).
    sort_key: Vec<u8>,
    target: EntryTarget,
    system_use: SystemUse,
}

/// Names the entries of `directory` in `namespace`, unique within the directory, sorted.
fn namespace_entries(
    source: &SourceTree<'_>,
    directory: &SourceDirectory<'_>,
    namespace: Namespace,
) -> Vec<NamespaceEntry> {
    let mut taken_primary: BTreeSet<(String, String)> = BTreeSet::new();
    let mut taken_joliet: BTreeSet<Vec<u16>> = BTreeSet::new();
    let mut entries = Vec::with_capacity(directory.entries.len());
    for (name, target) in &directory.entries {
        let is_directory = matches!(target, EntryTarget::Directory(_));
        let (identifier, sort_key) = match namespace {
            Namespace::Primary => {
                let (base, extension) = primary_name_parts(name, is_directory);
                let mut candidate = base.clone();
                let mut attempt = 0u64;
                while candidate.is_empty()
                    || taken_primary.contains(&(candidate.clone(), extension.clone()))
                {
                    attempt += 1;
                    let suffix = attempt.to_string();
                    let kept = PRIMARY_NAME_MAX.saturating_sub(suffix.len());
                    candidate = base.chars().take(kept).collect::<String>() + &suffix;
                }
                taken_primary.insert((candidate.clone(), extension.clone()));
                let identifier = if is_directory {
                    candidate.clone().into_bytes()
                } else {
                    format!("{candidate}.{extension};1").into_bytes()
                };
                let mut sort_key = candidate.into_bytes();
                sort_key.push(0);
                sort_key.extend_from_slice(extension.as_bytes());
                (identifier, sort_key)
            }
            Namespace::Joliet => {
                let units = joliet_units(name);
                let mut candidate = truncate_units(&units, JOLIET_NAME_MAX_UNITS).to_vec();
                let mut attempt = 0u64;
                while taken_joliet.contains(&candidate) {
                    attempt += 1;
                    let suffix: Vec<u16> = format!("~{attempt}").encode_utf16().collect();
                    let kept = JOLIET_NAME_MAX_UNITS.saturating_sub(suffix.len());
                    candidate = truncate_units(&units, kept).to_vec();
                    candidate.extend_from_slice(&suffix);
                }
                taken_joliet.insert(candidate.clone());
                let sort_key: Vec<u8> = candidate.iter().flat_map(|u| u.to_be_bytes()).collect();
                let mut identifier = sort_key.clone();
                if !is_directory {
                    identifier.extend_from_slice(&[0, b';', 0, b'1']);
                }
                (identifier, sort_key)
            }
        };
        let system_use = match namespace {
            Namespace::Primary => {
                let attributes = match target {
                    EntryTarget::Directory(index) => {
                        PosixAttributes::directory(source.directories[*index].subdirectory_count())
                    }
                    EntryTarget::File(_) => PosixAttributes::FILE,
                };
                rock_ridge_system_use(identifier.len(), Some(name), attributes, false)
            }
            Namespace::Joliet => SystemUse::default(),
        };
        entries.push(NamespaceEntry {
            identifier,
            sort_key,
            target: *target,
            system_use,
        });
    }
    entries.sort_by(|left, right| left.sort_key.cmp(&right.sort_key));
    entries
}

/// One directory of a namespace's tree.
#[derive(Debug)]
struct NamespaceDirectory {
    /// Index into [`SourceTree::directories`].
    source: usize,
    /// Index of the parent in [`NamespaceTree::directories`] (the root is its own parent).
    parent: usize,
    /// Path table identifier (`[0]` for the root).
    identifier: Vec<u8>,
    self_system_use: SystemUse,
    parent_system_use: SystemUse,
    entries: Vec<NamespaceEntry>,
}

/// One namespace's directory tree, directories in path-table order.
#[derive(Debug)]
struct NamespaceTree {
    namespace: Namespace,
    directories: Vec<NamespaceDirectory>,
    /// Index in `directories` of each source directory.
    index_of_source: Vec<usize>,
}

impl NamespaceTree {
    fn build(source: &SourceTree<'_>, namespace: Namespace) -> NamespaceTree {
        let mut entries_of_source: Vec<Option<Vec<NamespaceEntry>>> = source
            .directories
            .iter()
            .map(|directory| Some(namespace_entries(source, directory, namespace)))
            .collect();
        // Breadth first with sorted children gives path-table order: by depth, then parent
        // number, then identifier.
        let mut directories: Vec<NamespaceDirectory> = Vec::with_capacity(source.directories.len());
        let mut pending = vec![(0usize, 0usize, SELF_IDENTIFIER.to_vec())];
        let mut next_pending = 0;
        while let Some((source_index, parent, identifier)) = pending.get(next_pending).cloned() {
            let index = next_pending;
            next_pending += 1;
            let entries = entries_of_source[source_index].take().unwrap_or_default();
            for entry in &entries {
                if let EntryTarget::Directory(child) = entry.target {
                    pending.push((child, index, entry.identifier.clone()));
                }
            }
            directories.push(NamespaceDirectory {
                source: source_index,
                parent,
                identifier,
                self_system_use: SystemUse::default(),
                parent_system_use: SystemUse::default(),
                entries,
            });
        }
        let mut index_of_source = vec![0; source.directories.len()];
        for (index, directory) in directories.iter().enumerate() {
            index_of_source[directory.source] = index;
        }
        if namespace == Namespace::Primary {
            for index in 0..directories.len() {
                let attributes_of = |layout_index: usize| {
                    let source_index = directories[layout_index].source;
                    PosixAttributes::directory(
                        source.directories[source_index].subdirectory_count(),
                    )
                };
                let own = attributes_of(index);
                let parent = attributes_of(directories[index].parent);
                let directory = &mut directories[index];
                directory.self_system_use =
                    rock_ridge_system_use(SELF_IDENTIFIER.len(), None, own, index == 0);
                directory.parent_system_use =
                    rock_ridge_system_use(PARENT_IDENTIFIER.len(), None, parent, false);
            }
        }
        NamespaceTree {
            namespace,
            directories,
            index_of_source,
        }
    }

    /// Places every continuation area, none crossing a sector boundary; returns the number of
    /// continuation sectors needed.
    fn assign_continuation_slots(&mut self) -> u64 {
        let mut sector = 0u32;
        let mut offset = 0usize;
        let mut any = false;
        for directory in &mut self.directories {
            let system_uses = std::iter::once(&mut directory.self_system_use)
                .chain(std::iter::once(&mut directory.parent_system_use))
                .chain(
                    directory
                        .entries
                        .iter_mut()
                        .map(|entry| &mut entry.system_use),
                );
            for system_use in system_uses {
                let length = system_use.in_continuation.len();
                if length == 0 {
                    continue;
                }
                if offset + length > SECTOR_SIZE {
                    sector += 1;
                    offset = 0;
                }
                // offset < SECTOR_SIZE.
                system_use.continuation = ContinuationSlot {
                    sector,
                    offset: offset as u32,
                };
                offset += length;
                any = true;
            }
        }
        if any { u64::from(sector) + 1 } else { 0 }
    }

    /// The path table, type L (`little_endian`) or type M, given each directory's extent.
    fn path_table(&self, extents: &[u32], little_endian: bool) -> Vec<u8> {
        let mut table = Vec::new();
        for (index, directory) in self.directories.iter().enumerate() {
            let extent = extents.get(index).copied().unwrap_or(0);
            // Directory numbers start at 1; build() caps directories at 65535.
            let parent_number = u16::try_from(directory.parent + 1).unwrap_or(u16::MAX);
            // Identifiers are at most 132 bytes (Joliet: 64 units plus none for directories).
            table.push(directory.identifier.len() as u8);
            table.push(0);
            if little_endian {
                table.extend_from_slice(&extent.to_le_bytes());
                table.extend_from_slice(&parent_number.to_le_bytes());
            } else {
                table.extend_from_slice(&extent.to_be_bytes());
                table.extend_from_slice(&parent_number.to_be_bytes());
            }
            table.extend_from_slice(&directory.identifier);
            if directory.identifier.len() % 2 == 1 {
                table.push(0);
            }
        }
        table
    }

    /// The bytes of directory `index`'s extent, a whole number of sectors.
    fn directory_extent(&self, index: usize, placement: &Placement) -> Vec<u8> {
        let directory = &self.directories[index];
        let own = placement.directory(self.namespace, index);
        let parent = placement.directory(self.namespace, directory.parent);
        let mut records = Vec::with_capacity(directory.entries.len() + 2);
        records.push(directory_record(
            &SELF_IDENTIFIER,
            own,
            true,
            &directory.self_system_use,
            placement.continuation_base,
        ));
        records.push(directory_record(
            &PARENT_IDENTIFIER,
            parent,
            true,
            &directory.parent_system_use,
            placement.continuation_base,
        ));
        for entry in &directory.entries {
            let (extent, is_directory) = match entry.target {
                EntryTarget::Directory(source_index) => (
                    placement.directory(self.namespace, self.index_of_source[source_index]),
                    true,
                ),
                EntryTarget::File(file) => (placement.file(file), false),
            };
            records.push(directory_record(
                &entry.identifier,
                extent,
                is_directory,
                &entry.system_use,
                placement.continuation_base,
            ));
        }
        let mut extent_bytes = Vec::new();
        for record in &records {
            let used = extent_bytes.len() % SECTOR_SIZE;
            if used != 0 && used + record.len() > SECTOR_SIZE {
                extent_bytes.resize(extent_bytes.len() + SECTOR_SIZE - used, 0);
            }
            extent_bytes.extend_from_slice(record);
        }
        let padded = extent_bytes.len().div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
        extent_bytes.resize(padded, 0);
        extent_bytes
    }
}

/// Location and length in bytes of an extent.
#[derive(Clone, Copy, Debug, Default)]
struct Extent {
    sector: u32,
    length: u32,
}

/// Where every directory, file and continuation area of the image is.
#[derive(Debug, Default)]
struct Placement {
    primary_directories: Vec<Extent>,
    joliet_directories: Vec<Extent>,
    files: Vec<Extent>,
    continuation_base: u32,
}

impl Placement {
    fn directory(&self, namespace: Namespace, index: usize) -> Extent {
        let directories = match namespace {
            Namespace::Primary => &self.primary_directories,
            Namespace::Joliet => &self.joliet_directories,
        };
        directories.get(index).copied().unwrap_or_default()
    }

    fn file(&self, index: usize) -> Extent {
        self.files.get(index).copied().unwrap_or_default()
    }
}

/// One directory record (ECMA-119 9.1) with the given identifier, extent and System Use field.
fn directory_record(
    identifier: &[u8],
    extent: Extent,
    is_directory: bool,
    system_use: &SystemUse,
    continuation_base: u32,
) -> Vec<u8> {
    let mut record = Vec::with_capacity(
        record_length_before_system_use(identifier.len()) + system_use.encoded_length() + 1,
    );
    record.push(0); // length, filled in below
    record.push(0); // extended attribute record length
    record.extend_from_slice(&both_endian_u32(extent.sector));
    record.extend_from_slice(&both_endian_u32(extent.length));
    record.extend_from_slice(&RECORDING_TIME);
    record.push(if is_directory { FILE_FLAG_DIRECTORY } else { 0 });
    record.push(0); // file unit size
    record.push(0); // interleave gap size
    record.extend_from_slice(&both_endian_u16(1)); // volume sequence number
    // Identifiers are at most 14 bytes (level 1) or 132 bytes (Joliet).
    record.push(identifier.len() as u8);
    record.extend_from_slice(identifier);
    if identifier.len().is_multiple_of(2) {
        record.push(0);
    }
    system_use.encode(continuation_base, &mut record);
    if record.len() % 2 == 1 {
        record.push(0);
    }
    // rock_ridge_system_use keeps records within MAX_DIRECTORY_RECORD_LENGTH.
    record[0] = record.len() as u8;
    record
}

/// Writes `text` into a descriptor field, padded with spaces: ASCII for the PVD, UCS-2
/// big-endian for the Joliet SVD.
fn fill_text_field(field: &mut [u8], text: &str, namespace: Namespace) {
    match namespace {
        Namespace::Primary => {
            let mut bytes = text.bytes().chain(std::iter::repeat(b' '));
            for byte in field.iter_mut() {
                *byte = bytes.next().unwrap_or(b' ');
            }
        }
        Namespace::Joliet => {
            let mut units = text.encode_utf16().chain(std::iter::repeat(0x0020));
            for pair in field.chunks_mut(2) {
                let [high, low] = units.next().unwrap_or(0x0020).to_be_bytes();
                pair[0] = high;
                if let Some(second) = pair.get_mut(1) {
                    *second = low;
                }
            }
        }
    }
}

/// Sectors and length of one namespace's pair of path tables.
#[derive(Clone, Copy, Debug, Default)]
struct PathTables {
    length: u32,
    little_endian_sector: u32,
    big_endian_sector: u32,
}

/// Everything needed to write the image, with every sector placed.
struct ImageLayout<'a> {
    source: SourceTree<'a>,
    primary: NamespaceTree,
    joliet: NamespaceTree,
    primary_path_tables: PathTables,
    joliet_path_tables: PathTables,
    placement: Placement,
    /// First sector of file data; everything before it is metadata.
    first_file_sector: u32,
    total_sectors: u32,
}

impl<'a> ImageLayout<'a> {
    fn plan(files: &'a [(String, Vec<u8>)]) -> Result<Self, ConfigDriveError> {
        let source = SourceTree::build(files)?;
        let mut primary = NamespaceTree::build(&source, Namespace::Primary);
        let joliet = NamespaceTree::build(&source, Namespace::Joliet);
        let continuation_sectors = primary.assign_continuation_slots();

        let to_sector =
            |sector: u64| u32::try_from(sector).map_err(|_| ConfigDriveError::ImageTooLarge);
        let mut next_sector = u64::from(FIRST_PATH_TABLE_SECTOR);
        let mut place_path_tables = |tree: &NamespaceTree| -> Result<PathTables, ConfigDriveError> {
            let length = tree.path_table(&[], true).len();
            let sectors = sectors_for(length);
            let little_endian_sector = to_sector(next_sector)?;
            let big_endian_sector = to_sector(next_sector + sectors)?;
            next_sector += 2 * sectors;
            Ok(PathTables {
                length: u32::try_from(length).map_err(|_| ConfigDriveError::ImageTooLarge)?,
                little_endian_sector,
                big_endian_sector,
            })
        };
        let primary_path_tables = place_path_tables(&primary)?;
        let joliet_path_tables = place_path_tables(&joliet)?;

        // Directory extent lengths do not depend on where things are, so measure them with an
        // empty placement first.
        let unplaced = Placement::default();
        let mut placement = Placement::default();
        for tree in [&primary, &joliet] {
            for index in 0..tree.directories.len() {
                let length = tree.directory_extent(index, &unplaced).len();
                let extent = Extent {
                    sector: to_sector(next_sector)?,
                    length: u32::try_from(length).map_err(|_| ConfigDriveError::ImageTooLarge)?,
                };
                next_sector += sectors_for(length);
                match tree.namespace {
                    Namespace::Primary => placement.primary_directories.push(extent),
                    Namespace::Joliet => placement.joliet_directories.push(extent),
                }
            }
        }
        placement.continuation_base = to_sector(next_sector)?;
        next_sector += continuation_sectors;
        let first_file_sector = to_sector(next_sector)?;
        for file in &source.files {
            if file.length == 0 {
                placement.files.push(Extent::default());
                continue;
            }
            placement.files.push(Extent {
                sector: to_sector(next_sector)?,
                length: file.length,
            });
            next_sector += sectors_for(file.contents.len());
        }
        let total_sectors = to_sector(next_sector)?;
        Ok(ImageLayout {
            source,
            primary,
            joliet,
            primary_path_tables,
            joliet_path_tables,
            placement,
            first_file_sector,
            total_sectors,
        })
    }

    /// Sectors 0 up to the first file's data: descriptors, path tables, directories and
    /// continuation areas.
    fn metadata_sectors(&self) -> Vec<u8> {
        let mut image = vec![0u8; self.first_file_sector as usize * SECTOR_SIZE];
        let mut put = |sector: u32, offset: u32, bytes: &[u8]| {
            let start = sector as usize * SECTOR_SIZE + offset as usize;
            if let Some(destination) = image.get_mut(start..start + bytes.len()) {
                destination.copy_from_slice(bytes);
            }
        };
        put(
            PRIMARY_DESCRIPTOR_SECTOR,
            0,
            &self.volume_descriptor(Namespace::Primary),
        );
        put(
            JOLIET_DESCRIPTOR_SECTOR,
            0,
            &self.volume_descriptor(Namespace::Joliet),
        );
        let mut terminator = [0u8; 7];
        terminator[0] = 255;
        terminator[1..6].copy_from_slice(b"CD001");
        terminator[6] = 1;
        put(TERMINATOR_SECTOR, 0, &terminator);
        for (tree, tables, directories) in [
            (
                &self.primary,
                self.primary_path_tables,
                &self.placement.primary_directories,
            ),
            (
                &self.joliet,
                self.joliet_path_tables,
                &self.placement.joliet_directories,
            ),
        ] {
            let extents: Vec<u32> = directories.iter().map(|extent| extent.sector).collect();
            put(
                tables.little_endian_sector,
                0,
                &tree.path_table(&extents, true),
            );
            put(
                tables.big_endian_sector,
                0,
                &tree.path_table(&extents, false),
            );
            for (index, extent) in directories.iter().enumerate() {
                put(
                    extent.sector,
                    0,
                    &tree.directory_extent(index, &self.placement),
                );
            }
        }
        for directory in &self.primary.directories {
            let system_uses = [&directory.self_system_use, &directory.parent_system_use]
                .into_iter()
                .chain(directory.entries.iter().map(|entry| &entry.system_use));
            for system_use in system_uses {
                if !system_use.in_continuation.is_empty() {
                    put(
                        self.placement.continuation_base + system_use.continuation.sector,
                        system_use.continuation.offset,
                        &system_use.in_continuation,
                    );
                }
            }
        }
        image
    }

    /// The PVD or the Joliet SVD (ECMA-119 8.4, 8.5).
    fn volume_descriptor(&self, namespace: Namespace) -> Vec<u8> {
        let (tables, root) = match namespace {
            Namespace::Primary => (
                self.primary_path_tables,
                self.placement.directory(Namespace::Primary, 0),
            ),
            Namespace::Joliet => (
                self.joliet_path_tables,
                self.placement.directory(Namespace::Joliet, 0),
            ),
        };
        let mut descriptor = vec![0u8; SECTOR_SIZE];
        descriptor[0] = match namespace {
            Namespace::Primary => 1,
            Namespace::Joliet => 2,
        };
        descriptor[1..6].copy_from_slice(b"CD001");
        descriptor[6] = 1;
        fill_text_field(&mut descriptor[8..40], SYSTEM_IDENTIFIER, namespace);
        fill_text_field(&mut descriptor[40..72], VOLUME_LABEL, namespace);
        descriptor[80..88].copy_from_slice(&both_endian_u32(self.total_sectors));
        if namespace == Namespace::Joliet {
            // Joliet UCS-2 level 3.
            descriptor[88..91].copy_from_slice(b"%/E");
        }
        descriptor[120..124].copy_from_slice(&both_endian_u16(1)); // volume set size
        descriptor[124..128].copy_from_slice(&both_endian_u16(1)); // volume sequence number
        descriptor[128..132].copy_from_slice(&both_endian_u16(SECTOR_SIZE as u16));
        descriptor[132..140].copy_from_slice(&both_endian_u32(tables.length));
        descriptor[140..144].copy_from_slice(&tables.little_endian_sector.to_le_bytes());
        descriptor[148..152].copy_from_slice(&tables.big_endian_sector.to_be_bytes());
        let root_record = directory_record(&SELF_IDENTIFIER, root, true, &SystemUse::default(), 0);
        descriptor[156..156 + root_record.len()].copy_from_slice(&root_record);
        fill_text_field(&mut descriptor[190..318], "", namespace); // volume set
        fill_text_field(&mut descriptor[318..446], PUBLISHER_IDENTIFIER, namespace);
        fill_text_field(&mut descriptor[446..574], "", namespace); // data preparer
        fill_text_field(&mut descriptor[574..702], APPLICATION_IDENTIFIER, namespace);
        fill_text_field(&mut descriptor[702..739], "", namespace); // copyright file
        fill_text_field(&mut descriptor[739..776], "", namespace); // abstract file
        fill_text_field(&mut descriptor[776..813], "", namespace); // bibliographic file
        descriptor[813..829].copy_from_slice(VOLUME_TIME_DIGITS); // creation
        descriptor[830..846].copy_from_slice(VOLUME_TIME_DIGITS); // modification
        descriptor[847..863].copy_from_slice(UNSPECIFIED_TIME_DIGITS); // expiration
        descriptor[864..880].copy_from_slice(UNSPECIFIED_TIME_DIGITS); // effective
        descriptor[881] = 1; // file structure version
        descriptor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A scratch file path unique to this process and call, removed on drop.
    struct ScratchFile(PathBuf);

    impl ScratchFile {
        fn new(label: &str) -> ScratchFile {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let serial = COUNTER.fetch_add(1, Ordering::Relaxed);
            ScratchFile(std::env::temp_dir().join(format!(
                "yunhe-configdrive-{}-{serial}-{label}.iso",
                std::process::id()
            )))
        }
    }

    impl Drop for ScratchFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(path: &str, contents: &[u8]) -> (String, Vec<u8>) {
        (path.to_owned(), contents.to_vec())
    }

    /// Bytes that differ from position to position, so misplaced data shows.
    fn patterned(length: usize, seed: u8) -> Vec<u8> {
        (0..length)
            .map(|index| (index % 251) as u8 ^ seed.wrapping_mul(31))
            .collect()
    }

    fn nova_like_files() -> Vec<(String, Vec<u8>)> {
        vec![
            file(
                "openstack/latest/meta_data.json",
                br#"{"uuid": "0b7d3a64-8a5e-4a0b-9e3c-2f1d7f0c9a11", "hostname": "vm"}"#,
            ),
            ("openstack/latest/user_data".to_owned(), patterned(65536, 1)),
            file("openstack/latest/network_data.json", br#"{"links": []}"#),
            file("openstack/latest/vendor_data.json", b"{}"),
            file("openstack/latest/vendor_data2.json", b""),
            file(
                "openstack/2012-08-10/meta_data.json",
                br#"{"uuid": "0b7d3a64"}"#,
            ),
            file("openstack/2013-04-04/meta_data.json", br#"{"uuid": "x"}"#),
            file("openstack/2013-10-17/meta_data.json", br#"{"uuid": "y"}"#),
            file("ec2/latest/meta-data.json", br#"{"instance-id": "i-1"}"#),
            file(
                "ec2/2009-04-04/meta-data.json",
                br#"{"instance-id": "i-1"}"#,
            ),
        ]
    }

    /// Files that stress the layout: collisions of 8.3 names, full directory sectors, long,
    /// non-ASCII and Joliet-forbidden names, deep nesting, odd sizes.
    fn awkward_files() -> Vec<(String, Vec<u8>)> {
        let mut files = nova_like_files();
        for index in 0..150 {
            files.push((
                format!("openstack/content/file-number-{index:04}.json"),
                patterned(index * 37, index as u8),
            ));
        }
        files.push(("big/odd-size.bin".to_owned(), patterned(300_001, 7)));
        files.push(("big/one-sector.bin".to_owned(), patterned(2048, 8)));
        files.push((format!("long/{}", "n".repeat(100)), b"100".to_vec()));
        files.push((format!("long/{}", "m".repeat(135)), b"135".to_vec()));
        files.push((format!("long/{}", "l".repeat(136)), b"136".to_vec()));
        files.push((format!("long/{}", "k".repeat(255)), b"255".to_vec()));
        files.push((format!("long/{}.json", "j".repeat(70)), b"j70".to_vec()));
        files.push((format!("long/{}.json", "j".repeat(71)), b"j71".to_vec()));
        files.push((format!("{}/inside", "d".repeat(200)), b"inside".to_vec()));
        files.push(("names/ünïcødé-😀.txt".to_owned(), b"unicode".to_vec()));
        files.push(("names/what?;*:\\.txt".to_owned(), b"forbidden".to_vec()));
        files.push(("names/what_____.txt".to_owned(), b"underscores".to_vec()));
        files.push(("names/.hidden".to_owned(), b"hidden".to_vec()));
        files.push(("names/no_extension".to_owned(), b"none".to_vec()));
        files.push(("names/no_extension.".to_owned(), b"dot".to_vec()));
        files.push(("names/a.b.c.d".to_owned(), b"dots".to_vec()));
        files.push(("names/UPPER".to_owned(), b"upper".to_vec()));
        files.push(("names/upper".to_owned(), b"lower".to_vec()));
        files.push(("names/same".to_owned(), b"file".to_vec()));
        files.push(("names/SAME/x".to_owned(), b"directory".to_vec()));
        files.push(("a/b/c/d/e/f/g/h/i/j/deep.txt".to_owned(), b"deep".to_vec()));
        files.push(("top-level-file".to_owned(), b"top".to_vec()));
        files
    }

    // ---- a small ISO 9660 reader, independent of the writer's code ----

    fn le_u32(bytes: &[u8]) -> u32 {
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    fn be_u32(bytes: &[u8]) -> u32 {
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    /// A both-endian 32-bit number; both halves must agree.
    fn both_u32(bytes: &[u8]) -> u32 {
        let little = le_u32(&bytes[..4]);
        assert_eq!(little, be_u32(&bytes[4..8]), "both-endian halves differ");
        little
    }

    fn both_u16(bytes: &[u8]) -> u16 {
        let little = u16::from_le_bytes([bytes[0], bytes[1]]);
        assert_eq!(little, u16::from_be_bytes([bytes[2], bytes[3]]));
        little
    }

    fn sector(image: &[u8], number: u32) -> &[u8] {
        let start = number as usize * SECTOR_SIZE;
        &image[start..start + SECTOR_SIZE]
    }

    #[derive(Debug)]
    struct ParsedRecord {
        extent: u32,
        length: u32,
        is_directory: bool,
        identifier: Vec<u8>,
        system_use: Vec<u8>,
    }

    fn parse_record(record: &[u8]) -> ParsedRecord {
        let identifier_length = record[32] as usize;
        let system_use_start = 33 + identifier_length + (identifier_length + 1) % 2;
        assert_eq!(record[1], 0, "extended attribute records are not written");
        assert_eq!(both_u16(&record[28..32]), 1, "volume sequence number");
        ParsedRecord {
            extent: both_u32(&record[2..10]),
            length: both_u32(&record[10..18]),
            is_directory: record[25] & 0x02 != 0,
            identifier: record[33..33 + identifier_length].to_vec(),
            system_use: record[system_use_start..].to_vec(),
        }
    }

    fn parse_directory(image: &[u8], extent: u32, length: u32) -> Vec<ParsedRecord> {
        assert_eq!(length as usize % SECTOR_SIZE, 0, "directory length");
        let start = extent as usize * SECTOR_SIZE;
        let data = &image[start..start + length as usize];
        let mut records = Vec::new();
        let mut offset = 0;
        while offset < data.len() {
            let record_length = data[offset] as usize;
            if record_length == 0 {
                offset = (offset / SECTOR_SIZE + 1) * SECTOR_SIZE;
                continue;
            }
            assert!(
                offset % SECTOR_SIZE + record_length <= SECTOR_SIZE,
                "a directory record crosses a sector boundary"
            );
            assert_eq!(record_length % 2, 0, "record lengths are even");
            records.push(parse_record(&data[offset..offset + record_length]));
            offset += record_length;
        }
        assert!(records.len() >= 2, "every directory has . and ..");
        assert_eq!(records[0].identifier, [0]);
        assert_eq!(records[1].identifier, [1]);
        assert_eq!(records[0].extent, extent, "'.' points at its own directory");
        records
    }

    /// SUSP entries of a System Use field, following CE entries; CE itself is left out.
    fn susp_entries(image: &[u8], system_use: &[u8]) -> Vec<Vec<u8>> {
        let mut entries = Vec::new();
        let mut area = system_use.to_vec();
        loop {
            let mut continuation = None;
            let mut offset = 0;
            while offset + 4 <= area.len() {
                let length = area[offset + 2] as usize;
                assert!(length >= 4, "SUSP entry too short");
                let entry = area[offset..offset + length].to_vec();
                assert_eq!(entry[3], 1, "SUSP entry version");
                if &entry[..2] == b"CE" {
                    assert_eq!(length, 28);
                    continuation = Some((
                        both_u32(&entry[4..12]),
                        both_u32(&entry[12..20]) as usize,
                        both_u32(&entry[20..28]) as usize,
                    ));
                } else {
                    entries.push(entry);
                }
                offset += length;
            }
            let Some((block, offset, length)) = continuation else {
                return entries;
            };
            assert!(
                offset + length <= SECTOR_SIZE,
                "continuation area crosses a sector boundary"
            );
            area = sector(image, block)[offset..offset + length].to_vec();
        }
    }

    /// The Rock Ridge name of a record's NM entries, and its PX mode.
    fn rock_ridge_name_and_mode(image: &[u8], record: &ParsedRecord) -> (String, u32) {
        let mut name = Vec::new();
        let mut mode = None;
        let mut continues = false;
        let mut rr_flags = None;
        for entry in susp_entries(image, &record.system_use) {
            match &entry[..2] {
                b"NM" => {
                    assert!(entry[4] <= NAME_CONTINUES, "NM flags");
                    name.extend_from_slice(&entry[5..]);
                    continues = entry[4] & NAME_CONTINUES != 0;
                }
                b"PX" => {
                    assert_eq!(entry.len(), 36);
                    mode = Some(both_u32(&entry[4..12]));
                }
                b"RR" => rr_flags = Some(entry[4]),
                b"TF" => assert_eq!(entry.len(), 26),
                other => panic!("unexpected SUSP entry {other:?}"),
            }
        }
        assert!(!continues, "the last NM entry must not continue");
        assert_eq!(rr_flags, Some(RR_HAS_PX | RR_HAS_NM | RR_HAS_TF));
        (
            String::from_utf8(name).expect("NM name is UTF-8"),
            mode.expect("PX entry"),
        )
    }

    fn joliet_name(record: &ParsedRecord) -> String {
        let units: Vec<u16> = record
            .identifier
            .chunks(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .collect();
        let name = String::from_utf16(&units).expect("Joliet name is UTF-16");
        if record.is_directory {
            name
        } else {
            name.strip_suffix(";1")
                .expect("Joliet file names end in ;1")
                .to_owned()
        }
    }

    /// Walks a directory tree, naming entries with `name_of`; returns file path → contents and
    /// directory path → extent.
    fn walk(
        image: &[u8],
        root: (u32, u32),
        name_of: &dyn Fn(&ParsedRecord) -> String,
    ) -> (BTreeMap<String, Vec<u8>>, BTreeMap<String, u32>) {
        let mut files = BTreeMap::new();
        let mut directories = BTreeMap::new();
        let mut pending = vec![(String::new(), root.0, root.1, root.0)];
        while let Some((prefix, extent, length, parent_extent)) = pending.pop() {
            directories.insert(prefix.clone(), extent);
            let records = parse_directory(image, extent, length);
            assert_eq!(records[1].extent, parent_extent, "'..' of {prefix:?}");
            let mut previous_identifier: Option<Vec<u8>> = None;
            for record in &records[2..] {
                if let Some(previous) = &previous_identifier {
                    assert_ne!(previous, &record.identifier, "duplicate identifier");
                }
                previous_identifier = Some(record.identifier.clone());
                let path = format!("{prefix}{}", name_of(record));
                if record.is_directory {
                    pending.push((format!("{path}/"), record.extent, record.length, extent));
                } else {
                    let start = record.extent as usize * SECTOR_SIZE;
                    let contents = image[start..start + record.length as usize].to_vec();
                    assert!(files.insert(path, contents).is_none(), "duplicate path");
                }
            }
        }
        (files, directories)
    }

    /// Reads a path table and returns directory path ('/'-terminated, root "") → extent,
    /// checking the ECMA-119 ordering rules.
    fn read_path_table(
        image: &[u8],
        location: u32,
        length: u32,
        little_endian: bool,
        name_of: &dyn Fn(&[u8]) -> String,
    ) -> BTreeMap<String, u32> {
        let start = location as usize * SECTOR_SIZE;
        let table = &image[start..start + length as usize];
        let mut paths: Vec<String> = Vec::new();
        let mut extents = BTreeMap::new();
        let mut previous_parent = 0u16;
        let mut offset = 0;
        while offset < table.len() {
            let identifier_length = table[offset] as usize;
            let field =
                |range: std::ops::Range<usize>| &table[offset + range.start..offset + range.end];
            let (extent, parent) = if little_endian {
                (
                    le_u32(field(2..6)),
                    u16::from_le_bytes([table[offset + 6], table[offset + 7]]),
                )
            } else {
                (
                    be_u32(field(2..6)),
                    u16::from_be_bytes([table[offset + 6], table[offset + 7]]),
                )
            };
            let identifier = &table[offset + 8..offset + 8 + identifier_length];
            assert!(parent >= previous_parent, "path table sorted by parent");
            previous_parent = parent;
            let path = if paths.is_empty() {
                assert_eq!(identifier, [0], "root first");
                assert_eq!(parent, 1);
                String::new()
            } else {
                let parent_path = &paths[usize::from(parent) - 1];
                format!("{parent_path}{}/", name_of(identifier))
            };
            paths.push(path.clone());
            extents.insert(path, extent);
            offset += 8 + identifier_length + identifier_length % 2;
        }
        extents
    }

    struct ParsedImage {
        rock_ridge_files: BTreeMap<String, Vec<u8>>,
        joliet_files: BTreeMap<String, Vec<u8>>,
    }

    /// Parses the whole image, checking descriptors, path tables and both trees; returns the
    /// files by Rock Ridge and by Joliet name.
    fn parse_image(image: &[u8]) -> ParsedImage {
        assert_eq!(image.len() % SECTOR_SIZE, 0);
        assert!(image[..16 * SECTOR_SIZE].iter().all(|byte| *byte == 0));
        let primary = sector(image, 16);
        let joliet = sector(image, 17);
        let terminator = sector(image, 18);
        assert_eq!(&primary[..7], b"\x01CD001\x01");
        assert_eq!(&joliet[..7], b"\x02CD001\x01");
        assert_eq!(&terminator[..7], b"\xffCD001\x01");
        assert_eq!(&primary[40..72], b"config-2                        ");
        let joliet_label: Vec<u16> = joliet[40..72]
            .chunks(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .collect();
        assert_eq!(
            String::from_utf16(&joliet_label).expect("UCS-2 label"),
            "config-2        "
        );
        assert_eq!(&joliet[88..91], b"%/E");
        for descriptor in [primary, joliet] {
            assert_eq!(
                both_u32(&descriptor[80..88]) as usize * SECTOR_SIZE,
                image.len(),
                "volume space size"
            );
            assert_eq!(both_u16(&descriptor[128..132]), 2048);
            assert_eq!(&descriptor[813..829], b"2020010100000000");
        }

        // Rock Ridge is announced in the root's '.' record: SP first, then ER (via CE).
        let primary_root = parse_record(&primary[156..190]);
        assert!(primary_root.system_use.is_empty());
        let root_records = parse_directory(image, primary_root.extent, primary_root.length);
        assert_eq!(&root_records[0].system_use[..7], b"SP\x07\x01\xbe\xef\x00");
        let root_entries = susp_entries(image, &root_records[0].system_use);
        let extension = root_entries
            .iter()
            .find(|entry| &entry[..2] == b"ER")
            .expect("ER entry in the root's '.' record");
        assert_eq!(&extension[8..18], b"RRIP_1991A");

        let (rock_ridge_files, primary_directories) = walk(
            image,
            (primary_root.extent, primary_root.length),
            &|record| {
                let (name, mode) = rock_ridge_name_and_mode(image, record);
                let expected_mode = if record.is_directory {
                    DIRECTORY_MODE
                } else {
                    FILE_MODE
                };
                assert_eq!(mode, expected_mode, "mode of {name}");
                name
            },
        );
        // The ISO 9660 identifiers are level 1: d-characters, 8.3, version 1.
        let (_, level_one_directories) = walk(
            image,
            (primary_root.extent, primary_root.length),
            &|record| {
                let identifier = String::from_utf8(record.identifier.clone()).expect("ASCII");
                let is_d_character =
                    |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
                if record.is_directory {
                    assert!(identifier.len() <= 8 && identifier.chars().all(is_d_character));
                } else {
                    let (name, version) = identifier.split_once(';').expect("version");
                    assert_eq!(version, "1");
                    let (base, extension) = name.split_once('.').expect("dot");
                    assert!(
                        base.len() <= 8 && base.chars().all(is_d_character),
                        "{identifier}"
                    );
                    assert!(extension.len() <= 3 && extension.chars().all(is_d_character));
                }
                identifier
            },
        );

        let joliet_root = parse_record(&joliet[156..190]);
        let (joliet_files, joliet_directories) =
            walk(image, (joliet_root.extent, joliet_root.length), &|record| {
                assert!(record.system_use.is_empty());
                assert!(record.identifier.len() <= 2 * JOLIET_NAME_MAX_UNITS + 4);
                joliet_name(record)
            });

        // Path tables L and M of both descriptors list the same directories as the trees.
        let ascii = |identifier: &[u8]| String::from_utf8(identifier.to_vec()).expect("ASCII");
        let ucs2 = |identifier: &[u8]| {
            let units: Vec<u16> = identifier
                .chunks(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            String::from_utf16(&units).expect("UTF-16")
        };
        for (descriptor, expected, name_of) in [
            (
                primary,
                &level_one_directories,
                &ascii as &dyn Fn(&[u8]) -> String,
            ),
            (joliet, &joliet_directories, &ucs2),
        ] {
            let length = both_u32(&descriptor[132..140]);
            let little =
                read_path_table(image, le_u32(&descriptor[140..144]), length, true, name_of);
            let big = read_path_table(image, be_u32(&descriptor[148..152]), length, false, name_of);
            assert_eq!(&little, expected);
            assert_eq!(&big, expected);
        }
        assert_eq!(primary_directories.len(), level_one_directories.len());
        ParsedImage {
            rock_ridge_files,
            joliet_files,
        }
    }

    fn write_and_read(label: &str, files: &[(String, Vec<u8>)]) -> (ScratchFile, Vec<u8>) {
        let scratch = ScratchFile::new(label);
        write_iso(&scratch.0, files).expect("write_iso");
        let image = std::fs::read(&scratch.0).expect("read image");
        (scratch, image)
    }

    fn expected_files(files: &[(String, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
        files.iter().cloned().collect()
    }

    #[test]
    fn nova_layout_reads_back_through_rock_ridge_and_joliet() {
        let files = nova_like_files();
        let (_scratch, image) = write_and_read("nova", &files);
        let parsed = parse_image(&image);
        assert_eq!(parsed.rock_ridge_files, expected_files(&files));
        assert_eq!(parsed.joliet_files, expected_files(&files));
        // Descriptors, 4 path table sectors, 9 directories per tree, one continuation sector,
        // data sectors: 64 KiB user_data is 32 sectors, the 8 small non-empty files one each.
        assert_eq!(image.len(), (19 + 4 + 2 * 9 + 1 + 32 + 8) * SECTOR_SIZE);
    }

    #[test]
    fn awkward_names_and_sizes_read_back() {
        let files = awkward_files();
        let (_scratch, image) = write_and_read("awkward", &files);
        let parsed = parse_image(&image);
        assert_eq!(parsed.rock_ridge_files, expected_files(&files));

        // Joliet keeps names of up to 64 UTF-16 units (forbidden characters become '_') and
        // shortens longer ones, uniquely; the contents are always all there.
        assert_eq!(parsed.joliet_files.len(), files.len());
        let joliet_contents: BTreeSet<&Vec<u8>> = parsed.joliet_files.values().collect();
        let given_contents: BTreeSet<&Vec<u8>> = files.iter().map(|(_, data)| data).collect();
        assert_eq!(joliet_contents, given_contents);
        for (path, contents) in &files {
            let fits = path
                .split('/')
                .all(|component| component.encode_utf16().count() <= JOLIET_NAME_MAX_UNITS);
            // "what?;*:\\.txt" sorts first and takes "what_____.txt"; checked below.
            let collides = path.contains("what");
            if fits && !collides {
                assert_eq!(parsed.joliet_files.get(path), Some(contents), "{path}");
            }
        }
        assert_eq!(
            parsed
                .joliet_files
                .get("names/what_____.txt")
                .map(Vec::as_slice),
            Some(&b"forbidden"[..])
        );
        assert_eq!(
            parsed
                .joliet_files
                .get("names/what_____.txt~1")
                .map(Vec::as_slice),
            Some(&b"underscores"[..])
        );
        assert_eq!(
            parsed
                .joliet_files
                .get(&format!("long/{}", "n".repeat(64)))
                .map(Vec::as_slice),
            Some(&b"100"[..])
        );
    }

    #[test]
    fn many_directories_and_long_names_span_several_sectors() {
        // 300 directories need two sectors of path table per table; 40 names of 255 bytes need
        // several continuation sectors.
        let mut files: Vec<(String, Vec<u8>)> = (0..300)
            .map(|index| {
                (
                    format!("directory-{index:03}/file"),
                    patterned(index, index as u8),
                )
            })
            .collect();
        for index in 0..40 {
            let name = format!("{index:02}{}", "r".repeat(253));
            files.push((format!("long/{name}"), patterned(index, 3)));
        }
        let (_scratch, image) = write_and_read("many", &files);
        let primary = sector(&image, 16);
        assert!(both_u32(&primary[132..140]) as usize > SECTOR_SIZE);
        let parsed = parse_image(&image);
        assert_eq!(parsed.rock_ridge_files, expected_files(&files));
        assert_eq!(parsed.joliet_files.len(), files.len());
    }

    #[test]
    fn empty_file_list_gives_an_empty_volume() {
        let (_scratch, image) = write_and_read("empty", &[]);
        let parsed = parse_image(&image);
        assert!(parsed.rock_ridge_files.is_empty());
        assert!(parsed.joliet_files.is_empty());
    }

    #[test]
    fn output_is_deterministic() {
        let files = awkward_files();
        let (_first, first) = write_and_read("first", &files);
        let (_second, second) = write_and_read("second", &files);
        assert!(first == second, "two writes of the same files differ");
    }

    #[test]
    fn existing_destination_is_truncated() {
        let scratch = ScratchFile::new("truncate");
        std::fs::write(&scratch.0, vec![0xAA; 10 * 1024 * 1024]).expect("fill");
        write_iso(&scratch.0, &nova_like_files()).expect("write_iso");
        let image = std::fs::read(&scratch.0).expect("read image");
        assert!(image.len() < 1024 * 1024);
        parse_image(&image);
    }

    #[test]
    fn bad_paths_are_refused_before_writing() {
        let long_component = "x".repeat(256);
        let cases: Vec<Vec<(String, Vec<u8>)>> = vec![
            vec![file("", b"")],
            vec![file("/openstack/latest/meta_data.json", b"")],
            vec![file("openstack/../meta_data.json", b"")],
            vec![file("..", b"")],
            vec![file("openstack/./meta_data.json", b"")],
            vec![file("openstack//meta_data.json", b"")],
            vec![file("openstack/latest/", b"")],
            vec![file("nul\0byte", b"")],
            vec![file(&format!("openstack/{long_component}"), b"")],
        ];
        for files in cases {
            let scratch = ScratchFile::new("bad");
            let error = write_iso(&scratch.0, &files).expect_err("bad path accepted");
            assert!(
                matches!(error, ConfigDriveError::InvalidPath { .. }),
                "{:?}: {error}",
                files[0].0
            );
            assert!(!scratch.0.exists(), "nothing is written for bad input");
        }
        // 255 bytes is still fine.
        let scratch = ScratchFile::new("limit");
        write_iso(&scratch.0, &[file(&"x".repeat(255), b"ok")]).expect("255-byte name");

        let duplicate = [file("a/b", b"1"), file("a/b", b"2")];
        let scratch = ScratchFile::new("duplicate");
        assert!(matches!(
            write_iso(&scratch.0, &duplicate),
            Err(ConfigDriveError::DuplicatePath(path)) if path == "a/b"
        ));
        for conflicting in [
            [file("a", b"1"), file("a/b", b"2")],
            [file("a/b", b"1"), file("a", b"2")],
        ] {
            assert!(matches!(
                write_iso(&scratch.0, &conflicting),
                Err(ConfigDriveError::FileDirectoryConflict(_))
            ));
        }
        assert!(!scratch.0.exists());
        let message = write_iso(&scratch.0, &[file("/etc/passwd", b"")])
            .expect_err("absolute path")
            .to_string();
        assert!(
            message.contains("/etc/passwd") && message.contains("absolute"),
            "{message}"
        );
    }

    #[test]
    fn unwritable_destination_is_an_io_error() {
        let error = write_iso(
            Path::new("/nonexistent-directory/config.iso"),
            &nova_like_files(),
        )
        .expect_err("cannot write there");
        assert!(matches!(error, ConfigDriveError::Io(_)), "{error}");
    }

    /// Runs `isoinfo` with `args`; `None` when isoinfo is not installed.
    fn isoinfo(args: &[&str]) -> Option<Vec<u8>> {
        let output = match std::process::Command::new("isoinfo").args(args).output() {
            Ok(output) => output,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => panic!("running isoinfo: {error}"),
        };
        assert!(
            output.status.success(),
            "isoinfo {args:?} failed: {output:?}"
        );
        Some(output.stdout)
    }

    #[test]
    fn isoinfo_reads_the_image() {
        let files = nova_like_files();
        let (scratch, _image) = write_and_read("isoinfo", &files);
        let image_path = scratch.0.to_str().expect("UTF-8 temp path");
        let Some(summary) = isoinfo(&["-d", "-i", image_path]) else {
            eprintln!("isoinfo not installed (Debian package genisoimage); skipping");
            return;
        };
        let summary = String::from_utf8_lossy(&summary);
        assert!(summary.contains("Volume id: config-2"), "{summary}");
        assert!(
            summary.contains("Rock Ridge signatures version 1 found"),
            "{summary}"
        );
        assert!(
            summary.contains("Joliet with UCS level 3 found"),
            "{summary}"
        );
        for extension in ["-R", "-J"] {
            let listing = isoinfo(&[extension, "-l", "-i", image_path]).unwrap_or_default();
            let listing = String::from_utf8_lossy(&listing);
            for directory in [
                "/openstack/latest/",
                "/openstack/2012-08-10/",
                "/ec2/latest/",
            ] {
                assert!(
                    listing.contains(&format!("Directory listing of {directory}")),
                    "{extension}: {directory} missing from\n{listing}"
                );
            }
            for (path, _) in &files {
                let name = path.rsplit('/').next().unwrap_or_default();
                let suffix = if extension == "-J" { ";1" } else { "" };
                assert!(
                    listing.contains(&format!("  {name}{suffix}")),
                    "{extension}: {name} missing from\n{listing}"
                );
            }
            if extension == "-R" {
                assert!(listing.contains("-r--r--r--"), "{listing}");
                assert!(listing.contains("dr-xr-xr-x"), "{listing}");
            }
            for (path, contents) in &files {
                // isoinfo matches Joliet file names with their ";1" version.
                let suffix = if extension == "-J" { ";1" } else { "" };
                let extracted = isoinfo(&[
                    extension,
                    "-i",
                    image_path,
                    "-x",
                    &format!("/{path}{suffix}"),
                ])
                .unwrap_or_default();
                assert!(
                    &extracted == contents,
                    "{extension}: contents of {path} differ"
                );
            }
        }
    }
}
