//! The 64-byte header and its flag bits.

use crate::container::cursor::Cursor;
use crate::error::ParseError;

pub const MAGIC: [u8; 4] = *b"APR\0";
pub const VERSION: (u8, u8) = (2, 0);
pub const HEADER_LEN: usize = 64;
/// Where the header's own CRC32 sits; those four bytes are left out of it.
pub const CHECKSUM_AT: usize = 40;
const RESERVED_AT: usize = 44;

/// Header flag bits, as aprender assigns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u16);

/// How a reader must treat a flag it finds set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handling {
    /// Describes the file; nothing to do.
    Informational,
    /// Changes how the payload must be read, in a way this reader does not implement.
    Unsupported,
}

impl Flags {
    pub const LZ4_COMPRESSED: u16 = 0x0001;
    pub const ZSTD_COMPRESSED: u16 = 0x0002;
    pub const ENCRYPTED: u16 = 0x0004;
    pub const SIGNED: u16 = 0x0008;
    pub const SHARDED: u16 = 0x0010;
    pub const QUANTIZED: u16 = 0x0020;
    pub const HAS_FILTERBANK: u16 = 0x0040;
    pub const HAS_MODEL_CARD: u16 = 0x0080;
    pub const STREAMING: u16 = 0x0100;
    pub const HAS_VOCAB: u16 = 0x0200;
    pub const LAYOUT_ROW_MAJOR: u16 = 0x0400;
    pub const LAYOUT_COLUMN_MAJOR: u16 = 0x0800;

    const TABLE: &'static [(u16, &'static str, Handling)] = &[
        (Self::LZ4_COMPRESSED, "LZ4_COMPRESSED", Handling::Unsupported),
        (Self::ZSTD_COMPRESSED, "ZSTD_COMPRESSED", Handling::Unsupported),
        (Self::ENCRYPTED, "ENCRYPTED", Handling::Unsupported),
        (Self::SIGNED, "SIGNED", Handling::Unsupported),
        (Self::SHARDED, "SHARDED", Handling::Unsupported),
        (Self::QUANTIZED, "QUANTIZED", Handling::Informational),
        (Self::HAS_FILTERBANK, "HAS_FILTERBANK", Handling::Informational),
        (Self::HAS_MODEL_CARD, "HAS_MODEL_CARD", Handling::Informational),
        (Self::STREAMING, "STREAMING", Handling::Informational),
        (Self::HAS_VOCAB, "HAS_VOCAB", Handling::Informational),
        (Self::LAYOUT_ROW_MAJOR, "LAYOUT_ROW_MAJOR", Handling::Informational),
        // Column-major tensors are a conversion bug by aprender's own definition.
        (Self::LAYOUT_COLUMN_MAJOR, "LAYOUT_COLUMN_MAJOR", Handling::Unsupported),
    ];

    pub fn contains(self, flag: u16) -> bool {
        self.0 & flag == flag
    }

    /// Names of the set bits, e.g. `HAS_VOCAB | LAYOUT_ROW_MAJOR`.
    pub fn describe(self) -> String {
        let names: Vec<&str> = Self::TABLE.iter().filter(|(bit, ..)| self.contains(*bit)).map(|(_, n, _)| *n).collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(" | ")
        }
    }

    /// Refuses bits this reader does not know or cannot honour.
    fn check(self, offset: u64) -> Result<(), ParseError> {
        let known = Self::TABLE.iter().fold(0u16, |acc, (bit, ..)| acc | bit);
        if self.0 & !known != 0 {
            return Err(ParseError::new(
                "header.flags",
                offset,
                format!("unknown flag bits 0x{:04x} (flags 0x{:04x})", self.0 & !known, self.0),
            ));
        }
        for (bit, name, handling) in Self::TABLE {
            if *handling == Handling::Unsupported && self.contains(*bit) {
                return Err(ParseError::new(
                    "header.flags",
                    offset,
                    format!("flag {name} (0x{bit:04x}) is set; this reader does not support it"),
                ));
            }
        }
        Ok(())
    }
}

/// The header fields, checksum excluded (it is computed, not stored here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub major: u8,
    pub minor: u8,
    pub flags: Flags,
    pub tensor_count: u32,
    pub metadata_offset: u64,
    pub metadata_len: u32,
    pub index_offset: u64,
    pub data_offset: u64,
}

/// CRC32 (IEEE) of a header's bytes with the checksum field left out.
pub fn header_checksum(raw: &[u8; HEADER_LEN]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&raw[..CHECKSUM_AT]);
    hasher.update(&raw[CHECKSUM_AT + 4..]);
    hasher.finalize()
}

impl Header {
    /// The 64 bytes on disk, checksum filled in, reserved bytes zero.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut raw = [0u8; HEADER_LEN];
        raw[0..4].copy_from_slice(&MAGIC);
        raw[4] = self.major;
        raw[5] = self.minor;
        raw[6..8].copy_from_slice(&self.flags.0.to_le_bytes());
        raw[8..12].copy_from_slice(&self.tensor_count.to_le_bytes());
        raw[12..20].copy_from_slice(&self.metadata_offset.to_le_bytes());
        raw[20..24].copy_from_slice(&self.metadata_len.to_le_bytes());
        raw[24..32].copy_from_slice(&self.index_offset.to_le_bytes());
        raw[32..40].copy_from_slice(&self.data_offset.to_le_bytes());
        let crc = header_checksum(&raw);
        raw[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&crc.to_le_bytes());
        raw
    }

    /// Reads and checks the header: magic, checksum, version, reserved bytes, flags.
    pub fn parse(bytes: &[u8]) -> Result<Header, ParseError> {
        let mut cur = Cursor::new(bytes);
        let magic: [u8; 4] = cur.array("header.magic")?;
        if magic != MAGIC {
            return Err(ParseError::new("header.magic", 0, format!("expected \"APR\\0\", found {magic:02x?}")));
        }
        let raw: [u8; HEADER_LEN] = Cursor::new(bytes).array("header")?;
        let stored = u32::from_le_bytes(raw[CHECKSUM_AT..CHECKSUM_AT + 4].try_into().expect("4 bytes"));
        let computed = header_checksum(&raw);
        if stored != computed {
            return Err(ParseError::new(
                "header.checksum",
                CHECKSUM_AT as u64,
                format!("header checksum mismatch: expected 0x{stored:08x} (stored), found 0x{computed:08x} (CRC32 of the header)"),
            ));
        }
        let header = Header {
            major: cur.u8("header.version.major")?,
            minor: cur.u8("header.version.minor")?,
            flags: Flags(cur.u16("header.flags")?),
            tensor_count: cur.u32("header.tensor_count")?,
            metadata_offset: cur.u64("header.metadata_offset")?,
            metadata_len: cur.u32("header.metadata_length")?,
            index_offset: cur.u64("header.index_offset")?,
            data_offset: cur.u64("header.data_offset")?,
        };
        if header.major != VERSION.0 {
            return Err(ParseError::new(
                "header.version",
                4,
                format!("version {}.{} is not supported (this reader reads 2.x)", header.major, header.minor),
            ));
        }
        if let Some(at) = raw[RESERVED_AT..].iter().position(|&b| b != 0) {
            let offset = (RESERVED_AT + at) as u64;
            return Err(ParseError::new("header.reserved", offset, "reserved bytes must be zero"));
        }
        header.flags.check(6)?;
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            major: 2,
            minor: 0,
            flags: Flags(Flags::LAYOUT_ROW_MAJOR | Flags::HAS_VOCAB),
            tensor_count: 3,
            metadata_offset: 64,
            metadata_len: 100,
            index_offset: 192,
            data_offset: 320,
        }
    }

    #[test]
    fn header_round_trips_and_layout_matches_offsets() {
        let raw = sample().to_bytes();
        assert_eq!(&raw[0..4], b"APR\0");
        assert_eq!(raw[4..6], [2, 0]);
        assert_eq!(u16::from_le_bytes([raw[6], raw[7]]), 0x0600);
        assert_eq!(u32::from_le_bytes(raw[8..12].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(raw[12..20].try_into().unwrap()), 64);
        assert_eq!(u32::from_le_bytes(raw[20..24].try_into().unwrap()), 100);
        assert_eq!(u64::from_le_bytes(raw[24..32].try_into().unwrap()), 192);
        assert_eq!(u64::from_le_bytes(raw[32..40].try_into().unwrap()), 320);
        assert!(raw[44..].iter().all(|&b| b == 0));
        assert_eq!(Header::parse(&raw).unwrap(), sample());
    }

    #[test]
    fn checksum_excludes_its_own_field() {
        let raw = sample().to_bytes();
        let mut expected = crc32fast::Hasher::new();
        expected.update(&raw[..40]);
        expected.update(&raw[44..]);
        assert_eq!(u32::from_le_bytes(raw[40..44].try_into().unwrap()), expected.finalize());
    }

    #[test]
    fn unsupported_and_unknown_flags_are_refused() {
        for bits in [Flags::LZ4_COMPRESSED, Flags::SHARDED, Flags::LAYOUT_COLUMN_MAJOR, 0x1000] {
            let raw = Header { flags: Flags(bits), ..sample() }.to_bytes();
            let err = Header::parse(&raw).unwrap_err();
            assert_eq!(err.field, "header.flags", "{err}");
        }
        assert_eq!(Flags(0x0600).describe(), "HAS_VOCAB | LAYOUT_ROW_MAJOR");
    }
}
